"""The collection app (issue 22): the JSON API, the SQLite store's guarantees, the CLI, the load test.

API cases run in-process through FastAPI's TestClient; durability runs a
real server (``cen_bayes.app.launch``) and kills it with SIGKILL between
answers; a few CLI cases run as subprocesses to check what a user sees
(one line on stderr, exit status 1, no traceback).
"""

import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from benchmarks import app_load
from cen_bayes.annotations import read_annotations
from cen_bayes.app.__main__ import main
from cen_bayes.app.demo import write_grids, write_images
from cen_bayes.app.grids import GridsError, load_grids
from cen_bayes.app.launch import served
from cen_bayes.app.store import AnswerStore, export
from cen_bayes.app.web import create_app
from cen_bayes.crowd import CrowdData

N_GRIDS, GRID_SIZE = 3, 12


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return folder, write_images(folder, 16)


@pytest.fixture
def setup(tmp_path, images):
    folder, ids = images
    grids_file = write_grids(tmp_path / "grids.csv", ids, N_GRIDS, GRID_SIZE)
    return grids_file, folder, tmp_path / "crowd.sqlite"


@pytest.fixture
def client(setup):
    grids_file, folder, db = setup
    store = AnswerStore(db)
    with TestClient(create_app(load_grids(grids_file, folder), store)) as client:
        client.db = db
        yield client
    store.close()


def grid_images(grids_file) -> dict[str, list[str]]:
    table = pd.read_csv(grids_file, dtype=str)
    return {g: list(rows.image_id) for g, rows in table.groupby("grid_id", sort=False)}


def answer_for(images: list[str], n_groups: int = 3) -> dict[str, str]:
    return {image: str(k % n_groups + 1) for k, image in enumerate(images)}


def stored_rows(db) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT worker_id, grid_id, groups FROM answers ORDER BY rowid").fetchall()


def one_line_reason(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.strip() and "\n" not in detail, detail
    return detail


def test_round_trip_next_answer_export(client, setup, tmp_path):
    grids_file, _, db = setup
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    expected = grid_images(grids_file)
    seen = []
    for worker in ("ann", "bob"):
        while (response := client.get("/api/next", params={"worker_id": worker})).status_code == 200:
            grid = response.json()
            assert grid["images"] == expected[grid["grid_id"]]
            assert client.get("/images/" + grid["images"][0]).headers["content-type"] == "image/png"
            body = {"worker_id": worker, "grid_id": grid["grid_id"], "groups": answer_for(grid["images"])}
            stored = client.post("/api/answer", json=body)
            assert stored.status_code == 200 and stored.json()["already_stored"] is False
            seen.append((worker, grid["grid_id"]))
        assert response.status_code == 404
        assert "answered all 3 grids" in one_line_reason(response)
    assert seen == [(w, g) for w in ("ann", "bob") for g in expected]
    out = tmp_path / "annotations.csv"
    assert export(db, out) == 2 * N_GRIDS
    table = read_annotations(out)
    assert len(table) == 2 * N_GRIDS * GRID_SIZE
    assert list(table.columns) == ["worker_id", "grid_id", "image_id", "group"]
    first = table[(table.worker_id == "ann") & (table.grid_id == "g000")]
    assert dict(zip(first.image_id, first.group)) == answer_for(expected["g000"])
    data = CrowdData.from_source(out)
    assert data.n_grids == N_GRIDS and len(data.hits) == 2 * N_GRIDS


def test_next_prefers_grids_with_fewest_answers_ties_in_file_order(client, setup):
    expected = grid_images(setup[0])
    order = list(expected)
    assert client.get("/api/next", params={"worker_id": "new"}).json()["grid_id"] == order[0]
    client.post("/api/answer", json={"worker_id": "a", "grid_id": order[0], "groups": answer_for(expected[order[0]])})
    assert client.get("/api/next", params={"worker_id": "new"}).json()["grid_id"] == order[1]
    client.post("/api/answer", json={"worker_id": "a", "grid_id": order[2], "groups": answer_for(expected[order[2]])})
    assert client.get("/api/next", params={"worker_id": "new"}).json()["grid_id"] == order[1]
    assert client.get("/api/next", params={"worker_id": "a"}).json()["grid_id"] == order[1]  # never an answered one


def test_the_choice_of_next_grid_is_swappable(setup):
    grids_file, folder, db = setup
    last = lambda worker, grids, counts, answered: next((g for g in reversed(grids.order) if g not in answered), None)
    store = AnswerStore(db)
    with TestClient(create_app(load_grids(grids_file, folder), store, choose=last)) as client:
        assert client.get("/api/next", params={"worker_id": "w"}).json()["grid_id"] == "g002"
    store.close()


def test_identical_resubmission_is_stored_once(client, setup, tmp_path):
    images = grid_images(setup[0])["g001"]
    body = {"worker_id": "ann", "grid_id": "g001", "groups": answer_for(images)}
    assert client.post("/api/answer", json=body).json()["already_stored"] is False
    reordered = {**body, "groups": dict(reversed(list(body["groups"].items())))}  # same answer, other key order
    for again in (body, reordered, {**body, "worker_id": " ann "}):
        response = client.post("/api/answer", json=again)
        assert response.status_code == 200 and response.json() == {"stored": True, "already_stored": True,
                                                                    "worker_id": "ann", "grid_id": "g001"}
    assert len(stored_rows(client.db)) == 1
    export(client.db, tmp_path / "a.csv")
    assert len(read_annotations(tmp_path / "a.csv")) == GRID_SIZE


def test_a_changed_answer_is_refused_with_409(client, setup):
    images = grid_images(setup[0])["g001"]
    first = answer_for(images)
    client.post("/api/answer", json={"worker_id": "ann", "grid_id": "g001", "groups": first})
    changed = {**first, images[0]: "9"}
    response = client.post("/api/answer", json={"worker_id": "ann", "grid_id": "g001", "groups": changed})
    assert response.status_code == 409
    assert "already answered grid g001" in one_line_reason(response)
    assert [json.loads(g) for _, _, g in stored_rows(client.db)] == [first]  # the first answer stands
    other_worker = client.post("/api/answer", json={"worker_id": "bob", "grid_id": "g001", "groups": changed})
    assert other_worker.status_code == 200


def _malformed(images):
    good = answer_for(images)
    eleven = {image: str(k) for k, image in enumerate(images)}
    return {
        "unknown grid": ({"worker_id": "w", "grid_id": "nope", "groups": good}, "unknown grid_id"),
        "missing image": ({"worker_id": "w", "grid_id": "g000", "groups": dict(list(good.items())[1:])},
                          "no group for 1 image"),
        "extra image": ({"worker_id": "w", "grid_id": "g000", "groups": {**good, "other.png": "1"}},
                        "not in grid g000"),
        "too many groups": ({"worker_id": "w", "grid_id": "g000", "groups": eleven}, "at most 10"),
        "empty worker": ({"worker_id": "  ", "grid_id": "g000", "groups": good}, "worker_id is empty"),
        "missing worker": ({"grid_id": "g000", "groups": good}, "worker_id: Field required"),
        "worker a number": ({"worker_id": 7, "grid_id": "g000", "groups": good}, "worker_id"),
        "grid a number": ({"worker_id": "w", "grid_id": 0, "groups": good}, "grid_id"),
        "groups a list": ({"worker_id": "w", "grid_id": "g000", "groups": list(good.values())}, "groups"),
        "group a float": ({"worker_id": "w", "grid_id": "g000", "groups": {**good, images[0]: 1.5}},
                          "text or a whole number"),
        "group a bool": ({"worker_id": "w", "grid_id": "g000", "groups": {**good, images[0]: True}},
                         "text or a whole number"),
        "group null": ({"worker_id": "w", "grid_id": "g000", "groups": {**good, images[0]: None}},
                       "text or a whole number"),
        "empty group": ({"worker_id": "w", "grid_id": "g000", "groups": {**good, images[0]: " "}},
                        "is empty"),
        "unknown field": ({"worker_id": "w", "grid_id": "g000", "groups": good, "extra": 1}, "extra"),
        "body a list": ([1, 2], "JSON object"),
    }


@pytest.mark.parametrize("case", list(_malformed(["x"] * GRID_SIZE)))
def test_each_malformed_answer_is_refused_with_a_reason(client, setup, case):
    body, reason = _malformed(grid_images(setup[0])["g000"])[case]
    response = client.post("/api/answer", json=body)
    assert 400 <= response.status_code < 500
    assert reason in one_line_reason(response)
    assert stored_rows(client.db) == []


def test_bad_requests_get_one_line_reasons(client):
    not_json = client.post("/api/answer", content=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and "not valid JSON" in one_line_reason(not_json)
    assert "worker_id" in one_line_reason(client.get("/api/next"))
    assert "worker_id is empty" in one_line_reason(client.get("/api/next", params={"worker_id": ""}))
    for path in ("/images/../grids.csv", "/images/%2e%2e/grids.csv", "/images/nope.png", "/static/../store.py"):
        assert client.get(path).status_code == 404, path


def test_answers_survive_a_killed_server(setup):
    grids_file, folder, db = setup
    expected = grid_images(grids_file)
    order = list(expected)

    def post(url, worker, grid):
        body = json.dumps({"worker_id": worker, "grid_id": grid, "groups": answer_for(expected[grid])}).encode()
        request = urllib.request.Request(url + "api/answer", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    with served(grids_file, folder, db) as server:
        assert post(server.url, "ann", order[0])["already_stored"] is False
        assert post(server.url, "ann", order[1])["already_stored"] is False
        server.kill()
        assert server.process.returncode == -9
    with served(grids_file, folder, db) as server:
        assert post(server.url, "ann", order[1])["already_stored"] is True  # the retry after the crash
        with urllib.request.urlopen(server.url + "api/next?worker_id=ann", timeout=10) as response:
            assert json.load(response)["grid_id"] == order[2]
        assert post(server.url, "bob", order[0])["already_stored"] is False
        server.kill()
    assert [(w, g) for w, g, _ in stored_rows(db)] == [("ann", order[0]), ("ann", order[1]), ("bob", order[0])]


def test_database_uses_wal(client):
    with sqlite3.connect(client.db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def write(tmp_path, text, name="grids.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_GRIDS = {
    "missing column": ("grid,image_id\ng1,a.png\ng1,b.png\n", "missing column(s) grid_id"),
    "empty image id": ("grid_id,image_id\ng1,a.png\ng1,\n", "line 3, column image_id: missing value"),
    "empty grid id": ("grid_id,image_id\n ,a.png\ng1,b.png\n", "line 2, column grid_id: missing value"),
    "duplicate image": ("grid_id,image_id\ng1,a.png\ng1,b.png\ng1,a.png\n",
                        "line 4: image a.png appears twice in grid g1 (first on line 2)"),
    "one-image grid": ("grid_id,image_id\ng1,a.png\ng1,b.png\ng2,a.png\n", "line 4: grid g2 has only one image"),
    "too many fields": ("grid_id,image_id\ng1,a.png,x\n", "line 2: 3 fields"),
    "empty file": ("", "file is empty"),
    "header only": ("grid_id,image_id\n", "no grid rows"),
}


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_a_bad_grids_file_is_one_line_naming_file_and_row(tmp_path, images, case):
    text, reason = BAD_GRIDS[case]
    path = write(tmp_path, text)
    with pytest.raises(GridsError) as err:
        load_grids(path, images[0])
    message = str(err.value)
    assert message.startswith(str(path)) and reason in message and "\n" not in message


def test_a_missing_image_file_names_the_image_and_the_folder(tmp_path, images):
    path = write(tmp_path, f"grid_id,image_id\ng1,{images[1][0]}\ng1,gone.png\ng1,also-gone\n")
    with pytest.raises(GridsError, match=r"^image gone\.png \(grid g1, .*grids\.csv line 3\) has no file gone\.png "
                                         r"or gone\.png\.\* in .* \(and 1 more images missing\)$"):
        load_grids(path, images[0])
    escape = write(tmp_path, f"grid_id,image_id\ng1,{images[1][0]}\ng1,../grids.csv\n")
    with pytest.raises(GridsError, match="image ../grids.csv"):
        load_grids(escape, images[0])  # never a file outside the folder


def test_an_image_id_may_omit_the_extension(tmp_path, images):
    stems = [name.removesuffix(".png") for name in images[1][:3]]
    grids = load_grids(write(tmp_path, "grid_id,image_id\n" + "".join(f"g1,{s}\n" for s in stems)), images[0])
    assert grids.images["g1"] == tuple(stems)
    assert [p.name for p in grids.files.values()] == images[1][:3]
    (tmp_path / "pics").mkdir()
    for name in ("a.png", "a.jpg", "b.png"):
        (tmp_path / "pics" / name).write_bytes(b"x")
    with pytest.raises(GridsError, match="image a: 2 files .* have that stem"):
        load_grids(write(tmp_path, "grid_id,image_id\ng,a\ng,b\n"), tmp_path / "pics")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cen_bayes.app", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_cli_bad_input_is_one_line_and_status_1(tmp_path, images):
    bad = write(tmp_path, "grid_id,image_id\ng1,a.png\ng1,a.png\n")
    result = run_cli("serve", "--grids", bad, "--images", images[0], "--db", tmp_path / "db.sqlite", "--port", "0")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"error: {bad} line 3: image a.png appears twice in grid g1 "
                                                  "(first on line 2)"]
    assert not (tmp_path / "db.sqlite").exists()  # nothing started
    missing = run_cli("export", "--db", tmp_path / "none.sqlite", "--out", tmp_path / "a.csv")
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none.sqlite'}: no such file"]
    usage = run_cli("serve", "--grids", bad)
    assert usage.returncode == 1 and len(usage.stderr.strip().splitlines()) == 1 and "--images" in usage.stderr


def test_cli_export_and_its_errors(tmp_path, setup, capsys):
    grids_file, folder, db = setup
    AnswerStore(db).close()
    with pytest.raises(SystemExit, match=r"^error: .*crowd\.sqlite: no answers yet, nothing to export$"):
        main(["export", "--db", str(db), "--out", str(tmp_path / "a.csv")])
    assert not (tmp_path / "a.csv").exists()
    images = grid_images(grids_file)["g000"]
    store = AnswerStore(db)
    store.save("007", "g000", answer_for(images))
    store.close()
    main(["export", "--db", str(db), "--out", str(tmp_path / "a.csv")])
    assert "wrote 1 answers" in capsys.readouterr().out
    table = read_annotations(tmp_path / "a.csv")
    assert set(table.worker_id) == {"007"} and len(table) == GRID_SIZE  # ids stay text
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(SystemExit, match="junk.sqlite: not an SQLite database"):
        main(["export", "--db", str(tmp_path / "junk.sqlite"), "--out", str(tmp_path / "b.csv")])


def test_cli_serve_says_when_the_port_is_taken(setup):
    grids_file, folder, db = setup
    with served(grids_file, folder, db) as server:
        port = server.url.rsplit(":", 1)[1].strip("/")
        result = run_cli("serve", "--grids", grids_file, "--images", folder, "--db", db, "--port", port)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port} (Address already "
                                                      "in use)"]
        with urllib.request.urlopen(server.url + "api/health", timeout=10) as response:
            assert json.load(response) == {"grids": N_GRIDS, "answers": 0}


def test_load_test_smoke(tmp_path):
    app_load.main(["--smoke", "--out", str(tmp_path)])
    row = pd.read_csv(tmp_path / "app_load.csv").iloc[0]
    assert row["answers"] > 0 and row["lost"] == 0 and row["duplicated"] == 0 and row["unexpected_status"] == 0
    assert row["stored"] >= row["answers"] and row["export_ok"]
    assert row.next_p50_ms > 0 and row.answer_p99_ms >= row.answer_p50_ms
    report = (tmp_path / "app_load.md").read_text()
    assert "4 simulated people" in report and "for 3 s" in report and "localhost" in report
    assert not (tmp_path / "app_screenshot.png").exists()  # only full runs take a screenshot


def test_load_test_finds_a_lost_answer(tmp_path):
    db = tmp_path / "crowd.sqlite"
    store = AnswerStore(db)
    store.save("w", "g1", {"a": "1", "b": "2"})
    store.close()
    checked = app_load.check_database(db, {("w", "g1"): {"a": "1", "b": "2"}, ("w", "g2"): {"a": "1", "b": "1"}})
    assert checked["lost"] == 1 and checked["duplicated"] == 0
