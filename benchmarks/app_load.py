"""Load test of the collection app: many people sorting at once, then a check that no answer was lost.

    python -m benchmarks.app_load                        # 50 people, 60 s: results/app_load.{csv,md},
                                                         # and results/app_screenshot.png
    python -m benchmarks.app_load --smoke --out /tmp/x   # 4 people, 3 s (what the tests run)

A real server (``python -m cen_bayes.app serve``, one uvicorn process) runs on
a free localhost port with a generated grids file and a fresh database in a
temporary folder. Each simulated person (a thread with its own keep-alive
httpx client) loops: GET /api/next, POST an answer with random groups,
sometimes POST the same answer again (a retry: it must be acknowledged as
already stored) and sometimes a different one (it must be refused with
409). A person who has answered every grid is replaced by a new one. At
the end the server is killed with SIGKILL, as a crash would, and the
database is read: every answer acknowledged as stored must be there with
its groups (none lost), each (worker, grid) once (none duplicated), and
the export must be a table ``read_annotations`` accepts. Any failed check
makes the run exit with status 1.

Latencies are measured by the clients, so they include the client side's
own work; on a small machine the people and the server share the CPUs.
Needs httpx (the ``test`` extra); the screenshot needs selenium and
Debian's chromium and chromium-driver (skipped with a note if missing).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


class Person(threading.Thread):
    """One simulated person at one seat: next, answer, sometimes a retry or a changed answer."""

    def __init__(self, seat: int, url: str, deadline: float, retry: float, conflict: float, seed: int):
        super().__init__(daemon=True)
        self.seat, self.url, self.deadline = seat, url, deadline
        self.retry, self.conflict = retry, conflict
        self.rng = random.Random(seed * 1000 + seat)
        self.latency = {"next": [], "answer": []}
        self.acked: dict[tuple[str, str], dict] = {}  # answers the server said it stored
        self.counts = Counter()
        self.problems: list[str] = []

    def call(self, client, kind: str, method: str, path: str, **kwargs):
        start = time.perf_counter()
        try:
            response = client.request(method, path, **kwargs)
        except Exception as err:  # a transport failure is a result here, not a crash of the load test
            self.counts["transport_errors"] += 1
            self.problems.append(f"{method} {path}: {type(err).__name__}: {err}")
            return None
        self.latency[kind].append(time.perf_counter() - start)
        self.counts["requests"] += 1
        return response

    def expect(self, response, status: int, what: str) -> bool:
        if response is None:
            return False
        if response.status_code != status:
            self.counts["unexpected_status"] += 1
            self.problems.append(f"{what}: expected {status}, got {response.status_code} {response.text[:200]}")
            return False
        return True

    def run(self) -> None:
        import httpx

        generation = 0
        worker = f"seat{self.seat:02d}-{generation}"
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while time.monotonic() < self.deadline:
                response = self.call(client, "next", "GET", "/api/next", params={"worker_id": worker})
                if response is not None and response.status_code == 404:  # answered every grid: a new person
                    self.counts["finished_workers"] += 1
                    generation += 1
                    worker = f"seat{self.seat:02d}-{generation}"
                    continue
                if not self.expect(response, 200, "GET /api/next"):
                    continue
                grid = response.json()
                n_groups = self.rng.randint(1, 10)
                groups = {image: str(self.rng.randint(1, n_groups)) for image in grid["images"]}
                body = {"worker_id": worker, "grid_id": grid["grid_id"], "groups": groups}
                response = self.call(client, "answer", "POST", "/api/answer", json=body)
                if not self.expect(response, 200, "POST /api/answer"):
                    continue
                if response.json()["already_stored"]:
                    self.problems.append(f"a first answer of {worker} to {grid['grid_id']} was called a repeat")
                    continue
                self.acked[worker, grid["grid_id"]] = groups
                self.counts["answers"] += 1
                if self.rng.random() < self.retry:
                    response = self.call(client, "answer", "POST", "/api/answer", json=body)
                    if self.expect(response, 200, "retry"):
                        self.counts["retries"] += 1
                        if not response.json()["already_stored"]:
                            self.problems.append(f"a retry of {worker} on {grid['grid_id']} was stored as new")
                if self.rng.random() < self.conflict:
                    other = dict(groups)
                    first = grid["images"][0]
                    other[first] = "1" if groups[first] != "1" else "2"
                    response = self.call(client, "answer", "POST", "/api/answer",
                                         json={**body, "groups": other})
                    if self.expect(response, 409, "changed answer"):
                        self.counts["conflicts_refused"] += 1


def check_database(db: Path, acked: dict[tuple[str, str], dict]) -> dict:
    """Lost: acknowledged answers missing from ``db`` or stored with other groups. Duplicated: a
    (worker, grid) stored more than once. Unacknowledged: stored, but no client heard so."""
    import json

    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT worker_id, grid_id, groups FROM answers").fetchall()
    finally:
        con.close()
    stored = Counter((w, g) for w, g, _ in rows)
    groups = {(w, g): json.loads(text) for w, g, text in rows}
    lost = sum(1 for key, answer in acked.items() if groups.get(key) != answer)
    return {"stored": len(rows), "lost": lost, "duplicated": sum(n - 1 for n in stored.values() if n > 1),
            "unacknowledged": len(set(stored) - set(acked))}


def quantiles_ms(values: list[float]) -> dict:
    if not values:
        return {q: np.nan for q in ("p50", "p95", "p99")}
    return dict(zip(("p50", "p95", "p99"), np.percentile(np.asarray(values) * 1000, [50, 95, 99])))


def header(people: int, seconds: float, load: float) -> str:
    import platform

    import fastapi
    import uvicorn

    from benchmarks.runner import code_version, machine
    return (f"Measured at code `{code_version()}` on {machine()}, {os.cpu_count()} CPU cores, Python "
            f"{platform.python_version()}, FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__}, SQLite "
            f"{sqlite3.sqlite_version}: one server process on localhost, {people} simulated people (threads in one "
            f"client process on the same machine) for {seconds:g} s; load average {load:.1f} just before it (other "
            "processes sharing the CPUs).")


def report(row: dict, head: str) -> str:
    ok = row["lost"] == 0 and row["duplicated"] == 0 and row["unexpected_status"] == 0 \
        and row["transport_errors"] == 0 and row["export_ok"]
    latency = pd.DataFrame({
        "endpoint": ["GET /api/next", "POST /api/answer"],
        "requests": [row["next_requests"], row["answer_requests"]],
        "p50 ms": [row["next_p50_ms"], row["answer_p50_ms"]],
        "p95 ms": [row["next_p95_ms"], row["answer_p95_ms"]],
        "p99 ms": [row["next_p99_ms"], row["answer_p99_ms"]]})
    counts = pd.DataFrame({"": ["requests", "answers stored (acknowledged)", "answers per second",
                                "retries answered 'already stored'", "changed answers refused (409)",
                                "workers who answered every grid", "lost", "duplicated",
                                "unexpected status / transport errors"],
                           "value": [row["requests"], row["answers"], f"{row['answers_per_s']:.1f}", row["retries"],
                                     row["conflicts_refused"], row["finished_workers"], row["lost"],
                                     row["duplicated"],
                                     f"{row['unexpected_status']} / {row['transport_errors']}"]})
    verdict = ("Every acknowledged answer was in the database after the server was killed (SIGKILL), once each; "
               "the export passed `read_annotations`." if ok else "**FAILED**: see lost / duplicated / errors.")
    return (f"# Collection app load test\n\n{head}\n\n"
            f"{row['grids']} grids of {row['grid_size']} images; each person posts the same answer again with "
            f"probability {row['retry_p']:g} and a changed answer with probability {row['conflict_p']:g}.\n\n"
            f"{latency.to_markdown(index=False, floatfmt='.1f')}\n\n{counts.to_markdown(index=False)}\n\n"
            f"{verdict}\n")


def run(args) -> dict:
    from cen_bayes.annotations import read_annotations
    from cen_bayes.app.demo import write_grids, write_images
    from cen_bayes.app.launch import start, stop
    from cen_bayes.app.store import export

    work = Path(tempfile.mkdtemp(prefix="app-load-"))
    try:
        ids = write_images(work / "images", max(args.grid_size, 48))
        grids = write_grids(work / "grids.csv", ids, args.grids, args.grid_size, args.seed)
        db = work / "crowd.sqlite"
        server = start(grids, work / "images", db, work / "server.log")
        try:
            deadline = time.monotonic() + args.seconds
            people = [Person(seat, server.url, deadline, args.retry, args.conflict, args.seed)
                      for seat in range(args.people)]
            began = time.monotonic()
            for person in people:
                person.start()
            for person in people:
                person.join()
            elapsed = time.monotonic() - began
            server.kill()  # as a crash would: nothing gets to flush or close
        finally:
            stop(server)
        acked = {key: groups for p in people for key, groups in p.acked.items()}
        counts = sum((p.counts for p in people), Counter())
        problems = [text for p in people for text in p.problems]
        checked = check_database(db, acked)
        try:
            export(db, work / "annotations.csv")
            exported = read_annotations(work / "annotations.csv")
            export_ok = len(exported) == checked["stored"] * args.grid_size
        except Exception as err:  # reported, and the run fails
            problems.append(f"export: {err}")
            export_ok = False
    finally:
        shutil.rmtree(work, ignore_errors=True)
    nexts = [x for p in people for x in p.latency["next"]]
    answers = [x for p in people for x in p.latency["answer"]]
    row = {"people": args.people, "seconds": args.seconds, "elapsed_s": round(elapsed, 2), "grids": args.grids,
           "grid_size": args.grid_size, "retry_p": args.retry, "conflict_p": args.conflict,
           "requests": counts["requests"], "answers": counts["answers"],
           "answers_per_s": counts["answers"] / elapsed, "requests_per_s": counts["requests"] / elapsed,
           "retries": counts["retries"], "conflicts_refused": counts["conflicts_refused"],
           "finished_workers": counts["finished_workers"], "unexpected_status": counts["unexpected_status"],
           "transport_errors": counts["transport_errors"], **checked, "export_ok": export_ok,
           "next_requests": len(nexts), "answer_requests": len(answers),
           **{f"next_{k}_ms": v for k, v in quantiles_ms(nexts).items()},
           **{f"answer_{k}_ms": v for k, v in quantiles_ms(answers).items()}}
    for text in problems[:5]:
        print(f"problem: {text}", file=sys.stderr)
    return row


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths of the system's packages, or why they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    browser = next((p for p in CHROMIUM if Path(p).is_file()), None) or shutil.which("chromium")
    driver = next((p for p in CHROMEDRIVER if Path(p).is_file()), None) or shutil.which("chromedriver")
    if browser is None or driver is None:
        return ("no chromium / chromedriver found (apt-get install chromium chromium-driver); looked for "
                f"{', '.join(CHROMIUM + CHROMEDRIVER)}")
    return browser, driver


def headless_chrome(browser: str, driver: str, width: int = 1440, height: int = 960):
    """Selenium driving the system's chromium through the system's chromedriver; the explicit driver
    path keeps selenium-manager from downloading anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def click_into_group(chrome, image_ids: list[str], group: int) -> None:
    """The page's click path: select images, then click a group box."""
    from selenium.webdriver.common.by import By

    for image in image_ids:
        chrome.find_element(By.CSS_SELECTOR, f'.tile[data-image-id="{image}"]').click()
    chrome.find_element(By.CSS_SELECTOR, f'.group[data-group="{group}"] h2').click()


def wait_for(chrome, css: str, timeout: float = 10):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(chrome, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def screenshot(path: Path) -> str:
    """A screenshot of the page with one demo grid partly sorted (by shape); '' or why it was skipped."""
    from cen_bayes.app.demo import write_demo
    from cen_bayes.app.launch import served

    found = find_browser()
    if isinstance(found, str):
        return found
    with tempfile.TemporaryDirectory(prefix="app-shot-") as folder:
        grids, images = write_demo(folder, n_grids=2)
        with served(grids, images, Path(folder) / "crowd.sqlite") as server:
            chrome = headless_chrome(*found)
            try:
                chrome.get(server.url + "?worker_id=demo")
                wait_for(chrome, ".tile")
                ids = [t.get_attribute("data-image-id") for t in chrome.find_elements("css selector", ".tile")]
                by_shape: dict[str, list[str]] = {}
                for image in ids:
                    by_shape.setdefault(image.split("-")[0], []).append(image)
                for group, shape in enumerate(("circle", "square"), 1):
                    click_into_group(chrome, by_shape.get(shape, []), group)
                chrome.find_element("id", "submit").click()  # the refusal message shows in the screenshot
                for image in by_shape.get("star", [])[:2]:  # two images selected, about to be put in a group
                    chrome.find_element("css selector", f'.tile[data-image-id="{image}"]').click()
                path.parent.mkdir(parents=True, exist_ok=True)
                chrome.save_screenshot(str(path))
            finally:
                chrome.quit()
    return ""


def main(argv=None) -> None:
    from cen_bayes.atomic import write_csv, write_text

    parser = argparse.ArgumentParser(prog="python -m benchmarks.app_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--grids", type=int, default=200)
    parser.add_argument("--grid-size", type=int, default=24)
    parser.add_argument("--retry", type=float, default=0.1, help="chance a person posts the same answer again")
    parser.add_argument("--conflict", type=float, default=0.02, help="chance a person posts a changed answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="4 people, 3 s, 20 grids: checks the script runs")
    parser.add_argument("--screenshot", choices=("auto", "yes", "no"), default="auto",
                        help="write app_screenshot.png to --out (auto: on full runs only)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.smoke:
        args.people, args.seconds, args.grids = min(args.people, 4), min(args.seconds, 3), min(args.grids, 20)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    row = run(args)
    head = header(args.people, args.seconds, load)
    row["load_before"], row["machine"], row["code"] = load, head, head.split("`")[1]
    write_csv(pd.DataFrame([row]), out / "app_load.csv", float_format="%.4g")
    write_text(out / "app_load.md", report(row, head))
    print(f"{row['answers']} answers, {row['requests']} requests in {row['elapsed_s']} s; next p50/p95/p99 "
          f"{row['next_p50_ms']:.1f}/{row['next_p95_ms']:.1f}/{row['next_p99_ms']:.1f} ms, answer "
          f"{row['answer_p50_ms']:.1f}/{row['answer_p95_ms']:.1f}/{row['answer_p99_ms']:.1f} ms; lost {row['lost']}, "
          f"duplicated {row['duplicated']}; wrote {out / 'app_load.csv'} and {out / 'app_load.md'}")
    if args.screenshot == "yes" or (args.screenshot == "auto" and not args.smoke):
        skipped = screenshot(out / "app_screenshot.png")
        print(f"screenshot skipped: {skipped}" if skipped else f"wrote {out / 'app_screenshot.png'}")
    failed = row["lost"] or row["duplicated"] or row["unexpected_status"] or row["transport_errors"] \
        or not row["export_ok"]
    if failed:
        raise SystemExit("error: the load test found lost, duplicated or failed answers (see app_load.md)")


if __name__ == "__main__":
    main()
