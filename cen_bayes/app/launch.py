"""Run the app as a real server in a child process: what the load test measures and the tests kill.

In-process test clients skip the parts that matter for durability and
latency (a socket, uvicorn, a process that can die between answers), so
``served`` starts ``python -m cen_bayes.app serve --port 0`` and waits until
it answers. Its output goes to a log file, not a pipe, so a chatty server
can never block on a full pipe.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

_URL = re.compile(r"at (http://\S+/)")


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT/
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the process dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def start(grids, images, db, log: Path, timeout: float = 60) -> Server:
    """Start a server and return once it answers /api/health; RuntimeError (its last log line) if it fails."""
    command = [sys.executable, "-m", "cen_bayes.app", "serve", "--grids", str(grids), "--images", str(images),
               "--db", str(db), "--port", "0"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = Path(log).read_text().strip().splitlines()
            raise RuntimeError(f"the server exited with status {process.returncode}: "
                               f"{lines[-1] if lines else 'no output'}")
        if url is None and (found := _URL.search(Path(log).read_text())):
            url = found.group(1)
        if url is not None:
            try:
                with urllib.request.urlopen(url + "api/health", timeout=5):
                    return Server(url, process, Path(log))
            except OSError:
                pass
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"the server did not answer within {timeout:g} s (log: {log})")


def stop(server: Server) -> None:
    """SIGTERM (uvicorn finishes the requests in flight), SIGKILL if it hangs."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def served(grids, images, db, log: Path | None = None) -> Iterator[Server]:
    """A running server for the block; stopped after it, even if the block fails or killed it."""
    own_log = log is None
    if own_log:
        handle, name = tempfile.mkstemp(prefix="cen-bayes-app-", suffix=".log")
        os.close(handle)
        log = Path(name)
    server = start(grids, images, db, log)
    try:
        yield server
    finally:
        stop(server)
        if own_log:
            Path(log).unlink(missing_ok=True)
