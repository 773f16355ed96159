"""Answers in SQLite: one row per (worker, grid), written in one transaction each.

Why this shape:

* WAL journal, ``synchronous=FULL``: a committed answer is on disk before the
  page hears "stored", so killing the server (or the machine) between answers
  loses none of them, and readers never block the writer;
* one transaction per answer (``BEGIN IMMEDIATE`` ... ``COMMIT``): an answer
  is stored whole or not at all;
* the primary key (worker_id, grid_id) makes a resubmission idempotent: the
  identical answer sent again (a retry after a lost response, a double click)
  is reported as already stored and kept once; a *different* answer to a grid
  the worker already answered is a conflict (``AnswerConflict``), never a
  silent overwrite;
* an answer's groups are kept as one JSON object {image_id: group} in the
  grid's image order; ``export`` unrolls them into the annotation table.

One connection serves the whole process behind a lock: SQLite serialises
writers anyway, and the lock keeps the app's threads off each other's
transactions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    worker_id   TEXT NOT NULL,
    grid_id     TEXT NOT NULL,
    groups      TEXT NOT NULL,  -- JSON object {image_id: group}, the grid's image order
    received_at TEXT NOT NULL,  -- UTC, ISO 8601
    PRIMARY KEY (worker_id, grid_id)
);
CREATE INDEX IF NOT EXISTS answers_by_grid ON answers (grid_id);
"""


class AnswerConflict(ValueError):
    """The worker already answered this grid differently (one line)."""


class StoreError(ValueError):
    """The database cannot be used (one line)."""


class AnswerStore:
    """The answers database at ``path`` (created if absent)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: cannot open the answers database ({err})") from None
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: SQLite cannot use WAL mode here (got {mode}); put the database on a "
                             "local disk")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def save(self, worker_id: str, grid_id: str, groups: dict[str, str]) -> bool:
        """Store an answer; True if new, False if this exact answer was already stored.

        Raises AnswerConflict if the worker's stored answer to the grid differs.
        """
        text = json.dumps(groups, ensure_ascii=False)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                stored = self._db.execute("SELECT groups FROM answers WHERE worker_id = ? AND grid_id = ?",
                                          (worker_id, grid_id)).fetchone()
                if stored is None:
                    self._db.execute("INSERT INTO answers VALUES (?, ?, ?, ?)",
                                     (worker_id, grid_id, text, datetime.now(timezone.utc).isoformat()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if stored is None:
            return True
        if json.loads(stored[0]) == groups:
            return False
        raise AnswerConflict(f"worker {worker_id} already answered grid {grid_id} with different groups; "
                             "an answer cannot be changed")

    def progress(self, worker_id: str) -> tuple[Counter, set[str]]:
        """How many answers each grid has, and the grids ``worker_id`` answered (one consistent read)."""
        with self._lock:
            counts = Counter(dict(self._db.execute("SELECT grid_id, COUNT(*) FROM answers GROUP BY grid_id")))
            answered = {g for (g,) in self._db.execute("SELECT grid_id FROM answers WHERE worker_id = ?",
                                                       (worker_id,))}
        return counts, answered

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def answers(self):
        """(worker_id, grid_id, {image_id: group}) of every answer, in the order they arrived."""
        with self._lock:
            rows = self._db.execute("SELECT worker_id, grid_id, groups FROM answers ORDER BY rowid").fetchall()
        return [(w, g, json.loads(groups)) for w, g, groups in rows]


def open_existing(path) -> AnswerStore:
    """An answers database that must already exist (export must not create an empty one by mistake)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            probe.close()
    except sqlite3.Error as err:
        raise StoreError(f"{path}: not an SQLite database ({err})") from None
    if "answers" not in tables:
        raise StoreError(f"{path}: not an answers database (no table answers)")
    return AnswerStore(path)


def export(db, out) -> int:
    """Write the answers in ``db`` to ``out`` as the annotation table; the number of answers.

    One row per image per answer (worker_id, grid_id, image_id, group), checked with
    ``cen_bayes.annotations.validate`` before it is written whole (``cen_bayes.atomic``), so a file
    that exists is one the models read.
    """
    import pandas as pd

    from cen_bayes.annotations import REQUIRED_COLUMNS, validate
    from cen_bayes.atomic import write_csv

    store = open_existing(db)
    try:
        answers = store.answers()
    finally:
        store.close()
    if not answers:
        raise StoreError(f"{db}: no answers yet, nothing to export")
    rows = [(w, g, image, group) for w, g, groups in answers for image, group in groups.items()]
    table = pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS))
    validate(table, str(db))
    write_csv(table, out)
    return len(answers)
