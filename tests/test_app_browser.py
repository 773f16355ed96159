"""The sorting page in a real headless browser (Debian's chromium through its chromedriver, Selenium).

A person opens the page with ``?worker_id=``, moves images into groups (the
click path: select, then click a group; and a drag), is refused while an
image has no group, submits, sees the confirmation and the next grid; the
database and the export hold exactly what the page showed. Skipped, naming
what is missing, where selenium, chromium or chromedriver is not installed.
"""

import json
import sqlite3

import pytest

from benchmarks.app_load import click_into_group, find_browser, headless_chrome, wait_for
from cen_bayes.annotations import read_annotations
from cen_bayes.app.demo import write_demo
from cen_bayes.app.launch import served
from cen_bayes.app.store import export

FOUND = find_browser()
pytestmark = pytest.mark.skipif(isinstance(FOUND, str), reason=f"browser test skipped: {FOUND}")


@pytest.fixture(scope="module")
def chrome():
    driver = headless_chrome(*FOUND)
    yield driver
    driver.quit()


@pytest.fixture
def server(tmp_path):
    grids, images = write_demo(tmp_path, n_grids=2, grid_size=12, n_images=12)
    with served(grids, images, tmp_path / "crowd.sqlite") as server:
        server.db = tmp_path / "crowd.sqlite"
        yield server


def tiles(chrome, where: str) -> list[str]:
    return [t.get_attribute("data-image-id") for t in chrome.find_elements("css selector", f"{where} .tile")]


def drag(chrome, image: str, group: int) -> str:
    """Drag with Selenium's pointer actions; where chromedriver does not turn them into HTML5 drag events,
    dispatch the page's own dragstart / dragover / drop events with one DataTransfer. Returns which worked."""
    from selenium.webdriver.common.action_chains import ActionChains

    source = chrome.find_element("css selector", f'.tile[data-image-id="{image}"]')
    target = chrome.find_element("css selector", f'.group[data-group="{group}"]')
    ActionChains(chrome).drag_and_drop(source, target).perform()
    if image in tiles(chrome, f'.group[data-group="{group}"]'):
        return "actions"
    chrome.execute_script("""
        const [source, target] = arguments;
        const data = new DataTransfer();
        for (const [node, type] of [[source, "dragstart"], [target, "dragover"], [target, "drop"],
                                    [source, "dragend"]]) {
          node.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
        }""", source, target)
    return "events"


def test_sort_submit_and_export(chrome, server, tmp_path):
    chrome.get(server.url + "?worker_id=ann")
    wait_for(chrome, "#pool .tile")
    assert chrome.find_element("id", "worker").get_attribute("value") == "ann"
    first_grid = chrome.find_element("id", "board").get_attribute("data-grid-id")
    images = tiles(chrome, "#pool")
    assert len(images) == 12 and len(chrome.find_elements("css selector", ".group")) == 10
    assert chrome.execute_script("return document.querySelector('#pool .tile img').naturalWidth") == 96  # served

    how = drag(chrome, images[0], 3)
    print(f"drag moved the image through {how}")
    assert tiles(chrome, '.group[data-group="3"]') == [images[0]], f"the drag ({how}) did not move the image"
    click_into_group(chrome, images[1:5], 1)
    click_into_group(chrome, images[5:9], 2)
    assert tiles(chrome, '.group[data-group="1"]') == images[1:5]

    chrome.find_element("id", "submit").click()  # three images still in the grid: refused, visibly
    message = chrome.find_element("id", "message")
    assert "3 images are not in a group" in message.text and "error" in message.get_attribute("class")
    assert server_rows(server.db) == []

    click_into_group(chrome, images[9:], 3)
    chrome.find_element("css selector", f'.tile[data-image-id="{images[4]}"]').click()  # move one back out
    chrome.find_element("id", "pool").click()
    assert tiles(chrome, "#pool") == [images[4]]
    click_into_group(chrome, [images[4]], 4)
    assert tiles(chrome, "#pool") == []
    chrome.find_element("id", "submit").click()

    wait_for(chrome, f'#board:not([data-grid-id="{first_grid}"]) #pool .tile')
    assert f"Saved grid {first_grid}" in chrome.find_element("id", "message").text
    expected = {**{i: "1" for i in images[1:4]}, images[4]: "4", **{i: "2" for i in images[5:9]},
                **{i: "3" for i in [images[0], *images[9:]]}}
    assert server_rows(server.db) == [("ann", first_grid, expected)]
    export(server.db, tmp_path / "annotations.csv")
    table = read_annotations(tmp_path / "annotations.csv")
    assert dict(zip(table.image_id, table.group)) == expected and set(table.worker_id) == {"ann"}


def test_worker_id_from_the_text_box_and_the_end(chrome, server):
    from selenium.webdriver.support.ui import WebDriverWait

    chrome.get(server.url)
    assert not chrome.find_element("id", "board").is_displayed()
    box = chrome.find_element("id", "worker")
    box.send_keys("  bob ")
    chrome.find_element("id", "start").click()
    wait_for(chrome, "#pool .tile")
    assert "worker_id=bob" in chrome.current_url
    for _ in range(2):  # two grids: put everything in one group each time
        grid = chrome.find_element("id", "board").get_attribute("data-grid-id")
        click_into_group(chrome, tiles(chrome, "#pool"), 1)
        chrome.find_element("id", "submit").click()
        WebDriverWait(chrome, 10).until(lambda c: c.find_element("id", "board").get_attribute("data-grid-id") != grid
                                        or not c.find_element("id", "board").is_displayed())
    assert not chrome.find_element("id", "board").is_displayed()
    assert "All done" in chrome.find_element("id", "message").text
    assert [(w, g) for w, g, _ in server_rows(server.db)] == [("bob", "g000"), ("bob", "g001")]


def server_rows(db) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return [(w, g, json.loads(groups)) for w, g, groups in
                con.execute("SELECT worker_id, grid_id, groups FROM answers ORDER BY rowid")]
