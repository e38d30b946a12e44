"""The run store: one SQLite file under ``$NBORCH_HOME`` (default ``.nborch``).

The store writes what events say and never decides a state. Writes are short
``BEGIN IMMEDIATE`` transactions in WAL mode, so several nborch processes can share a store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import RunNotFound, StoreError
from .events import AttemptProgress, RunEnded, RunStarted, TaskStateChanged

SCHEMA_VERSION = 1
DB_NAME = "nborch.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    logical_date TEXT NOT NULL,
    params TEXT NOT NULL,
    source TEXT,
    pid INTEGER,
    host TEXT,
    heartbeat_at REAL
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started_at);
CREATE TABLE IF NOT EXISTS task_runs (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    task TEXT NOT NULL,
    position INTEGER NOT NULL,
    upstream TEXT NOT NULL,
    notebook TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    ended_at TEXT,
    output_path TEXT,
    vals TEXT,
    error TEXT,
    reason TEXT,
    progress TEXT,
    PRIMARY KEY (run_id, task)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    output_path TEXT,
    error TEXT,
    PRIMARY KEY (run_id, task, attempt)
);
"""


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_home() -> Path:
    return Path(os.environ.get("NBORCH_HOME") or ".nborch")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Store:
    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    # -- connection -------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.home.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.row_factory = sqlite3.Row
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot open the run store {self.path}: {exc}") from None
            self._conn = conn
            self._migrate()
        return self._conn

    def _migrate(self) -> None:
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(f"the run store {self.path} has schema version {row[0]}, newer than "
                                 f"this nborch understands ({SCHEMA_VERSION}); upgrade nborch")

    class _Tx:
        def __init__(self, store: "Store"):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            conn = self.store._conn
            for delay in (0.05, 0.1, 0.2, 0.5, 1, 2, None):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return conn
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc) or delay is None:
                        self.store._lock.release()
                        raise StoreError(f"cannot write the run store {self.store.path}: {exc}") \
                            from None
                    time.sleep(delay)
            raise AssertionError("unreachable")

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.store._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self.store._lock.release()

    def _write(self) -> "_Tx":
        return Store._Tx(self)

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        conn = self._connect()
        with self._lock:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- paths ------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    # -- writing: the engine's events -------------------------------------------------

    def __call__(self, event: Any) -> None:
        """The store as an event listener."""
        if isinstance(event, TaskStateChanged):
            self.task_changed(event)
        elif isinstance(event, AttemptProgress):
            self.progress(event)
        elif isinstance(event, RunStarted):
            self.run_started(event)
        elif isinstance(event, RunEnded):
            self.run_ended(event)

    def run_started(self, e: RunStarted) -> None:
        self._connect()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, pipeline, status, started_at, logical_date, params, source,"
                " pid, host, heartbeat_at) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (e.run_id, e.pipeline, e.started_at, e.logical_date, json.dumps(e.params), e.source,
                 e.pid, e.host, time.time()))
            conn.executemany(
                "INSERT INTO task_runs (run_id, task, position, upstream, notebook, status)"
                " VALUES (?, ?, ?, ?, ?, 'pending')",
                [(e.run_id, name, i, json.dumps(t["upstream"]), t.get("notebook"))
                 for i, (name, t) in enumerate(e.tasks.items())])

    def task_changed(self, e: TaskStateChanged) -> None:
        with self._write() as conn:
            sets = ["status = ?", "attempts = ?", "reason = ?"]
            args: list[Any] = [e.state, e.attempt, e.reason]
            if e.state == "running":
                sets += ["started_at = COALESCE(started_at, ?)", "progress = NULL", "error = NULL"]
                args.append(e.at)
                conn.execute("INSERT OR REPLACE INTO attempts (run_id, task, attempt, status,"
                             " started_at) VALUES (?, ?, ?, 'running', ?)",
                             (e.run_id, e.task, e.attempt, e.at))
            elif e.state in ("success", "failed", "retrying", "cancelled", "upstream_failed",
                             "skipped"):
                if e.state != "retrying":
                    sets.append("ended_at = ?")
                    args.append(e.at)
                sets += ["progress = NULL"]
                if e.output_path is not None:
                    sets.append("output_path = ?")
                    args.append(e.output_path)
                if e.values is not None:
                    sets.append("vals = ?")
                    args.append(json.dumps(e.values))
                if e.error is not None or e.state == "success":
                    sets.append("error = ?")
                    args.append(_dumps(e.error))
            if e.attempt_status is not None:
                conn.execute("UPDATE attempts SET status = ?, ended_at = ?, output_path = ?,"
                             " error = ? WHERE run_id = ? AND task = ? AND attempt = ?",
                             (e.attempt_status, e.at, e.output_path, _dumps(e.error), e.run_id,
                              e.task, e.attempt))
            args += [e.run_id, e.task]
            conn.execute(f"UPDATE task_runs SET {', '.join(sets)} WHERE run_id = ? AND task = ?",
                         args)

    def progress(self, e: AttemptProgress) -> None:
        with self._write() as conn:
            conn.execute("UPDATE task_runs SET progress = ? WHERE run_id = ? AND task = ?",
                         (json.dumps({"cell": e.cell, "cells": e.cells, "line": e.line}),
                          e.run_id, e.task))

    def run_ended(self, e: RunEnded) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
                         (e.status, e.ended_at, e.run_id))

    def heartbeat(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (time.time(), run_id))

    # -- reading ----------------------------------------------------------------------

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> list[dict]:
        if not self.exists:
            return []
        where, args = ("WHERE pipeline = ?", (pipeline,)) if pipeline else ("", ())
        rows = self._read(f"SELECT run_id, pipeline, status, started_at, ended_at FROM runs {where}"
                          " ORDER BY started_at DESC, run_id DESC LIMIT ?", (*args, limit))
        return [dict(r) for r in rows]

    def get_run(self, run_id: str):
        from .run import Run, TaskRun
        row = self._read("SELECT * FROM runs WHERE run_id = ?", (run_id,)) if self.exists else []
        if not row:
            raise RunNotFound(f"no run {run_id!r} in the store {self.path} "
                              "(see `nborch runs`; set NBORCH_HOME to use another store)")
        r = row[0]
        tasks = {}
        for t in self._read("SELECT * FROM task_runs WHERE run_id = ? ORDER BY position", (run_id,)):
            tasks[t["task"]] = TaskRun(
                name=t["task"], status=t["status"], attempts=t["attempts"],
                started_at=t["started_at"], ended_at=t["ended_at"], output_path=t["output_path"],
                values=_loads(t["vals"]) or {}, error=_loads(t["error"]), reason=t["reason"],
                progress=_loads(t["progress"]), upstream=tuple(_loads(t["upstream"])),
                notebook=t["notebook"])
        return Run(run_id=r["run_id"], pipeline=r["pipeline"], status=r["status"],
                   started_at=r["started_at"], ended_at=r["ended_at"],
                   logical_date=r["logical_date"], params=json.loads(r["params"]),
                   source=r["source"], tasks=tasks)

    def attempts(self, run_id: str, task: str | None = None) -> list[dict]:
        sql = "SELECT * FROM attempts WHERE run_id = ?"
        args: tuple = (run_id,)
        if task is not None:
            sql += " AND task = ?"
            args += (task,)
        rows = self._read(sql + " ORDER BY started_at, attempt", args)
        return [{**dict(r), "error": _loads(r["error"])} for r in rows]

    def iter_run_ids(self) -> Iterator[str]:
        for row in self._read("SELECT run_id FROM runs ORDER BY started_at"):
            yield row[0]
