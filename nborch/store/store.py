"""The run store: one SQLite file under ``$NBORCH_HOME`` (default ``.nborch``).

The store writes what events say and never decides a state (finding crashed runs is the one
judgement it makes, from facts: a dead process or a silent heartbeat; see crashes.py). Writes are short
``BEGIN IMMEDIATE`` transactions in WAL mode, so several nborch processes can share a store.
The schema version is SQLite's ``user_version``; ``MIGRATIONS`` brings any older store up.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from ..core.errors import RunNotFound, StoreError, StoreUnusable, StoreWriteFailed
from ..core.events import AttemptProgress, KernelStarted, RunEnded, RunStarted, TaskStateChanged
from ..core.run import Run, TaskRun, fold_resume, fold_task
from ..core.states import SUCCESSFUL, State
from ..core.private import DIR_MODE, FILE_MODE, makedirs, tighten
from .crashes import HOST, crash_events, is_dead, last_beat, process_started, stop_orphan_kernel

DB_NAME = "nborch.db"

MIGRATIONS: list[list[str]] = [
    [  # 1: runs, task runs, attempts
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, status TEXT NOT NULL,
            started_at TEXT NOT NULL, ended_at TEXT, logical_date TEXT NOT NULL,
            params TEXT NOT NULL, source TEXT, pid INTEGER, host TEXT, heartbeat_at REAL)""",
        "CREATE INDEX runs_by_start ON runs (started_at)",
        "CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at)",
        """CREATE TABLE task_runs (
            run_id TEXT NOT NULL REFERENCES runs (run_id), task TEXT NOT NULL,
            position INTEGER NOT NULL, upstream TEXT NOT NULL, notebook TEXT,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, started_at TEXT,
            ended_at TEXT, output_path TEXT, vals TEXT, error TEXT, reason TEXT, progress TEXT,
            PRIMARY KEY (run_id, task))""",
        """CREATE TABLE attempts (
            run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL,
            status TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, output_path TEXT,
            error TEXT, PRIMARY KEY (run_id, task, attempt))""",
    ],
    [  # 2: crash detection, resume and incremental runs
        "ALTER TABLE runs ADD COLUMN pid_started REAL",
        "ALTER TABLE runs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX runs_by_status ON runs (status)",
        "ALTER TABLE task_runs ADD COLUMN fingerprint TEXT",
        "ALTER TABLE task_runs ADD COLUMN result_of TEXT",
        "CREATE INDEX task_runs_by_task ON task_runs (task, status, ended_at)",
        "ALTER TABLE attempts ADD COLUMN kernel_pid INTEGER",
    ],
    [  # 3: schedules, grids
        "ALTER TABLE task_runs ADD COLUMN grid TEXT",
        "ALTER TABLE runs ADD COLUMN output_dir TEXT",
        """CREATE TABLE schedules (
            pipeline TEXT PRIMARY KEY, source TEXT NOT NULL, cron TEXT NOT NULL,
            timezone TEXT NOT NULL, catchup INTEGER NOT NULL, max_active_runs INTEGER NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0, last_slot TEXT, created_at TEXT NOT NULL)""",
        "CREATE INDEX runs_by_logical_date ON runs (pipeline, logical_date)",
    ],
    [  # 4: command tasks, declared products
        "ALTER TABLE task_runs ADD COLUMN command TEXT",
        "ALTER TABLE task_runs ADD COLUMN products TEXT",
    ],
    [  # 5: a run's own error (a slot that could not start), crashes told to the scheduler
        "ALTER TABLE runs ADD COLUMN error TEXT",
        # 0 when a crash is recorded, 1 once its on_failure hooks fired; NULL before then
        "ALTER TABLE runs ADD COLUMN crash_reported INTEGER",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


# Write failures that waiting will not cure: the store cannot record at all.
PERMANENT_ERRORS = ("SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PERM",
                    "SQLITE_AUTH")


def default_home() -> Path:
    return Path(os.environ.get("NBORCH_HOME") or ".nborch")


def _newer_schema(path: Path, version: int) -> str:
    return (f"the run store {path} has schema version {version}, newer than this nborch "
            f"understands ({SCHEMA_VERSION}); upgrade nborch")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# TaskRun fields whose task_runs column is named otherwise, and those stored as JSON.
_COLUMN = {"values": "vals"}
_JSON = frozenset({"values", "error", "progress", "command", "products"})


def _task_run(row: sqlite3.Row) -> TaskRun:
    """A task_runs row as the TaskRun it records."""
    return TaskRun(
        name=row["task"], status=row["status"], attempts=row["attempts"],
        started_at=row["started_at"], ended_at=row["ended_at"], output_path=row["output_path"],
        values=_loads(row["vals"]) or {}, error=_loads(row["error"]), reason=row["reason"],
        progress=_loads(row["progress"]), upstream=tuple(_loads(row["upstream"])),
        notebook=row["notebook"], fingerprint=row["fingerprint"], result_of=row["result_of"],
        grid=row["grid"], command=_loads(row["command"]), products=_loads(row["products"]) or {})


def _update_task(conn: sqlite3.Connection, run_id: str, task: str, changes: dict) -> None:
    """Write the changed fields of a task's TaskRun (``fold_task``, ``fold_resume``)."""
    if not changes:
        return
    sets = ", ".join(f"{_COLUMN.get(field, field)} = ?" for field in changes)
    args = [_dumps(value) if field in _JSON else value for field, value in changes.items()]
    conn.execute(f"UPDATE task_runs SET {sets} WHERE run_id = ? AND task = ?",
                 (*args, run_id, task))


def _fold_into_row(conn: sqlite3.Connection, e: TaskStateChanged | AttemptProgress) -> None:
    """Fold an event into its task's row, by the rule the live Run follows."""
    row = conn.execute("SELECT * FROM task_runs WHERE run_id = ? AND task = ?",
                       (e.run_id, e.task)).fetchone()
    if row is not None:
        _update_task(conn, e.run_id, e.task, fold_task(_task_run(row), e))


class Store:
    """The SQLite record of runs in ``home`` (``$NBORCH_HOME``, default ``./.nborch``).
    ``readonly``: for commands that only read (``runs``, ``show``, the dashboard): never
    writes, never waits for a writer, and works on a read-only copy of the home or a full
    disk."""

    run_type: type[Run] = Run  # what get_run builds (the public API's Run can resume)

    def __init__(self, home: str | Path | None = None, *, readonly: bool = False):
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / DB_NAME
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._depth = 0  # transactions open in the thread holding the lock

    # -- connection -------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        self._check_home()
        return self.path.exists()

    def _check_home(self) -> None:
        if self.home.exists() and not self.home.is_dir():  # a typo'd NBORCH_HOME, say
            raise StoreUnusable(f"the run store's folder {self.home} is a file; set "
                                "NBORCH_HOME (or --home) to a folder")

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._check_home()
            conn = self._open_readonly() if self.readonly else self._open()
            conn.row_factory = sqlite3.Row
            self._conn = conn
            if not self.readonly:
                self._migrate()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            makedirs(self.home)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._tighten()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from None
        return conn

    def _tighten(self) -> None:
        """The home is its owner's (see private.py). One an older nborch made 0755 is closed
        here, by readers too (where they may): with the folder 0700, nothing inside it can
        be reached. SQLite gives the -wal and -shm files it creates later the database's
        mode."""
        tighten(self.home, DIR_MODE)
        for suffix in ("", "-wal", "-shm"):
            tighten(f"{self.path}{suffix}", FILE_MODE)

    def _open_readonly(self) -> sqlite3.Connection:
        """Read-only, and never a writer's wait (WAL readers are not blocked). SQLite's
        read-only mode still needs the -shm file, which a read-only folder or a full disk
        cannot give; then, when no write-ahead log holds unmerged changes, the file is read
        as it is (``immutable``): nobody can be writing it there."""
        if not self.path.exists():
            raise RunNotFound(f"no run store at {self.path} (set NBORCH_HOME or --home to "
                              "use another store)")
        self._tighten()
        uri = "file:" + quote(str(self.path.resolve()))
        wal = Path(f"{self.path}-wal")
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(f"cannot read the run store {self.path}: {exc} (its "
                                 "write-ahead log cannot be read here)") from None
            try:
                conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                       check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc}") from None
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            conn.close()
            if version > SCHEMA_VERSION:
                raise StoreError(_newer_schema(self.path, version))
            writer = Store(self.home)  # an older store: brought up to date once (a write)
            try:
                writer._connect()
            finally:
                writer.close()
            return self._open_readonly()
        return conn

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(_newer_schema(self.path, version))
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; waits for other processes' transactions. Nested in
        one of this thread's, it joins it. A failure is ``StoreWriteFailed``, rolled back."""
        if self.readonly:
            raise StoreError(f"the run store {self.path} was opened read-only")
        with self._lock:
            conn = self._conn if self._conn is not None else self._connect()
            if self._depth:
                yield conn
                return
            for delay in (0.05, 0.1, 0.2, 0.5, 1, 2, None):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if delay is None or ("locked" not in str(exc) and "busy" not in str(exc)):
                        raise self._write_failed(exc) from None
                    time.sleep(delay)
            self._depth += 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:  # SQLite rolls some failures back itself
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.Error):
                    raise self._write_failed(exc) from None
                raise
            finally:
                self._depth -= 1

    def _write_failed(self, exc: sqlite3.Error) -> StoreWriteFailed:
        name = getattr(exc, "sqlite_errorname", "") or ""
        permanent = name.startswith(PERMANENT_ERRORS) or any(
            word in str(exc) for word in ("readonly", "malformed", "not a database"))
        return StoreWriteFailed(f"cannot write the run store {self.path}: {exc}", str(exc),
                                transient=not permanent)

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        conn = self._connect()
        with self._lock:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc}") from None

    def check_writable(self) -> None:
        """Raise ``StoreUnusable`` unless a run could be recorded here now: the database is
        whole (SQLite's quick check) and a write reaches the disk."""
        try:
            conn = self._connect()
            with self._lock:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise StoreUnusable(f"the run store {self.path} is corrupt ({problems[0]}); "
                                    "move it aside to start a new one")
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute(f"PRAGMA user_version = {version}")  # writes the header
        except StoreUnusable:
            raise
        except StoreWriteFailed as exc:
            raise StoreUnusable(f"cannot record runs in {self.path}: {exc.cause}; nothing "
                                "was run") from None
        except StoreError as exc:  # it could not be opened
            raise StoreUnusable(f"{exc}; nothing was run") from None
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot record runs in {self.path}: {exc}; nothing was "
                                "run") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- paths ------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def log_path(self, run_id: str, task: str) -> Path:
        return self.run_dir(run_id) / f"{task}.log"

    # -- writing: the engine's events -------------------------------------------------

    def __call__(self, event: Any) -> None:
        """The store as an event listener."""
        if isinstance(event, TaskStateChanged):
            self.task_changed(event)
        elif isinstance(event, AttemptProgress):
            self.progress(event)
        elif isinstance(event, KernelStarted):
            self.kernel_started(event)
        elif isinstance(event, RunStarted):
            self.run_started(event)
        elif isinstance(event, RunEnded):
            self.run_ended(event)

    def record(self, events: list) -> None:
        """Write ``events`` in one transaction: all of them, or none."""
        with self._write():
            for event in events:
                self(event)

    def run_started(self, e: RunStarted) -> None:
        with self._write() as conn:
            if e.resumes:
                conn.execute(
                    "UPDATE runs SET status = ?, ended_at = NULL, pid = ?, host = ?,"
                    " pid_started = ?, heartbeat_at = ?, resumes = ? WHERE run_id = ?",
                    (State.RUNNING, e.pid, e.host, process_started(e.pid), time.time(), e.resumes,
                     e.run_id))
                for name in e.tasks:
                    _update_task(conn, e.run_id, name, fold_resume(e, name))
                return
            conn.execute(
                "INSERT INTO runs (run_id, pipeline, status, started_at, logical_date, params, source,"
                " pid, host, pid_started, heartbeat_at, output_dir)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.run_id, e.pipeline, State.RUNNING, e.started_at, e.logical_date,
                 json.dumps(e.params), e.source, e.pid, e.host, process_started(e.pid),
                 time.time(), e.output_dir))
            conn.executemany(
                "INSERT INTO task_runs (run_id, task, position, upstream, notebook, grid, command,"
                " products, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.run_id, name, i, json.dumps(t["upstream"]), t.get("notebook"), t.get("grid"),
                  _dumps(t.get("command")), _dumps(t.get("products") or None), State.PENDING)
                 for i, (name, t) in enumerate(e.tasks.items())])

    def task_changed(self, e: TaskStateChanged) -> None:
        with self._write() as conn:
            if e.state == State.RUNNING:
                conn.execute("INSERT OR REPLACE INTO attempts (run_id, task, attempt, status,"
                             " started_at) VALUES (?, ?, ?, ?, ?)",
                             (e.run_id, e.task, e.attempt, State.RUNNING, e.at))
            if e.attempt_status is not None:
                conn.execute("UPDATE attempts SET status = ?, ended_at = ?, output_path = ?,"
                             " error = ? WHERE run_id = ? AND task = ? AND attempt = ?",
                             (e.attempt_status, e.at, e.output_path, _dumps(e.error), e.run_id,
                              e.task, e.attempt))
            _fold_into_row(conn, e)

    def progress(self, e: AttemptProgress) -> None:
        with self._write() as conn:
            _fold_into_row(conn, e)

    def kernel_started(self, e: KernelStarted) -> None:
        with self._write() as conn:
            conn.execute("UPDATE attempts SET kernel_pid = ? WHERE run_id = ? AND task = ?"
                         " AND attempt = ?", (e.pid, e.run_id, e.task, e.attempt))

    def run_ended(self, e: RunEnded) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE run_id = ?",
                         (e.status, e.ended_at, _dumps(e.error), e.run_id))

    def heartbeat(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (time.time(), run_id))

    # -- crashed runs -----------------------------------------------------------------

    def mark_crashed(self) -> list[str]:
        """Record runs whose orchestrating process is gone as ``crashed``; returns their ids.

        Only commands that write call this (``run``, ``resume``, the scheduler): reads show
        such a run as crashed without recording it (``get_run``, ``list_runs``). Kernels a
        crashed run left on this host are stopped.
        """
        if not self.exists:
            return []
        crashed = []
        for row in self._running_rows():
            if not is_dead(row):
                continue
            with self._write() as conn:  # one transaction: another process may record it first
                run = self._load_run(row["run_id"])
                if run.status != State.RUNNING:
                    continue
                for event in crash_events(run, row):
                    self(event)
                conn.execute("UPDATE runs SET crash_reported = 0 WHERE run_id = ?", (run.run_id,))
            crashed.append(row["run_id"])
            if row["host"] == HOST:
                for attempt in self._read("SELECT kernel_pid FROM attempts WHERE run_id = ? AND"
                                          " kernel_pid IS NOT NULL", (row["run_id"],)):
                    stop_orphan_kernel(attempt["kernel_pid"], row["run_id"])
        return crashed

    def _running_rows(self) -> list[sqlite3.Row]:
        return self._read("SELECT run_id, pid, host, pid_started, heartbeat_at FROM runs"
                          " WHERE status = 'running'")

    def unreported_crashes(self, since: dict[str, str]) -> list[str]:
        """Crashed runs nobody was told of yet, of the pipelines in ``since`` (pipeline ->
        ISO time: only runs started from then on), oldest first."""
        if not self.exists:
            return []
        rows = self._read("SELECT run_id, pipeline, started_at FROM runs WHERE status ="
                          " 'crashed' AND crash_reported = 0 ORDER BY started_at")
        return [r["run_id"] for r in rows if r["pipeline"] in since
                and _when(r["started_at"]) >= _when(since[r["pipeline"]])]

    def crash_reported(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET crash_reported = 1 WHERE run_id = ?", (run_id,))

    # -- reading ----------------------------------------------------------------------

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> list[dict]:
        """The newest runs; one whose process died shows as ``crashed`` (see
        ``mark_crashed``)."""
        if not self.exists:
            return []
        where, args = ("WHERE pipeline = ?", (pipeline,)) if pipeline else ("", ())
        rows = self._read("SELECT run_id, pipeline, status, started_at, ended_at, pid, host,"
                          f" pid_started, heartbeat_at FROM runs {where}"
                          " ORDER BY started_at DESC, run_id DESC LIMIT ?", (*args, limit))
        listed = []
        for r in rows:
            row = {k: r[k] for k in ("run_id", "pipeline", "status", "started_at", "ended_at")}
            if r["status"] == State.RUNNING and is_dead(r):
                row["status"], row["ended_at"] = State.CRASHED, last_beat(r)
            listed.append(row)
        return listed

    def get_run(self, run_id: str) -> Run:
        """The run as recorded; one whose process died as ``mark_crashed`` would record it."""
        run = self._load_run(run_id)
        if run.status == State.RUNNING:
            [row] = self._read("SELECT run_id, pid, host, pid_started, heartbeat_at FROM runs"
                               " WHERE run_id = ?", (run_id,))
            if is_dead(row):
                for event in crash_events(run, row):
                    run.apply(event)
        return run

    def _load_run(self, run_id: str) -> Run:
        row = self._read("SELECT * FROM runs WHERE run_id = ?", (run_id,)) if self.exists else []
        if not row:
            raise RunNotFound(f"no run {run_id!r} in the store {self.path} "
                              "(see `nborch runs`; set NBORCH_HOME to use another store)")
        r = row[0]
        rows = self._read("SELECT * FROM task_runs WHERE run_id = ? ORDER BY position", (run_id,))
        tasks = {t["task"]: _task_run(t) for t in rows}
        return self.run_type(run_id=r["run_id"], pipeline=r["pipeline"], status=r["status"],
                   started_at=r["started_at"], ended_at=r["ended_at"],
                   logical_date=r["logical_date"], params=json.loads(r["params"]),
                   source=r["source"], tasks=tasks, resumes=r["resumes"], home=self.home,
                   output_dir=r["output_dir"], error=_loads(r["error"]))

    def attempts(self, run_id: str, task: str | None = None) -> list[dict]:
        sql = ("SELECT run_id, task, attempt, status, started_at, ended_at, output_path, error"
               " FROM attempts WHERE run_id = ?")
        args: tuple = (run_id,)
        if task is not None:
            sql += " AND task = ?"
            args += (task,)
        rows = self._read(sql + " ORDER BY started_at, attempt", args)
        return [{**dict(r), "error": _loads(r["error"])} for r in rows]

    def last_success(self, pipeline: str, task: str) -> dict | None:
        """The newest successful (or skipped as up to date) run of ``task`` in ``pipeline``."""
        rows = self._read(
            "SELECT t.run_id, t.output_path, t.vals, t.fingerprint, t.result_of FROM task_runs t"
            " JOIN runs r ON r.run_id = t.run_id WHERE t.task = ? AND r.pipeline = ?"
            " AND t.status IN (?, ?) ORDER BY t.ended_at DESC LIMIT 1",
            (task, pipeline, *sorted(SUCCESSFUL)))
        if not rows:
            return None
        row = rows[0]
        return {"run_id": row["run_id"], "output_path": row["output_path"],
                "values": _loads(row["vals"]) or {}, "fingerprint": row["fingerprint"],
                "result_of": row["result_of"] or row["run_id"]}

    def runs_of_slot(self, pipeline: str, logical_date: str) -> list[str]:
        """Statuses of the runs of ``pipeline`` for one logical date."""
        if not self.exists:
            return []
        return [r["status"] for r in self._read(
            "SELECT status FROM runs WHERE pipeline = ? AND logical_date = ?",
            (pipeline, logical_date))]

    def running_count(self, pipeline: str) -> int:
        return self._read("SELECT count(*) FROM runs WHERE pipeline = ? AND status = 'running'",
                          (pipeline,))[0][0]

    # -- schedules --------------------------------------------------------------------

    def save_schedule(self, schedule) -> None:
        """Add or replace the schedule of ``schedule.pipeline``."""
        d = schedule.to_dict()
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO schedules (pipeline, source, cron, timezone, catchup,"
                " max_active_runs, paused, last_slot, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                tuple(d[k] for k in ("pipeline", "source", "cron", "timezone", "catchup",
                                     "max_active_runs", "paused", "last_slot", "created_at")))

    def schedule_records(self) -> list[dict]:
        """The schedules' rows, by pipeline (``scheduling.schedules.registered`` reads them
        as ``Schedule`` objects)."""
        if not self.exists:
            return []
        return [{**dict(r), "catchup": bool(r["catchup"]), "paused": bool(r["paused"])}
                for r in self._read("SELECT * FROM schedules ORDER BY pipeline")]

    def update_schedule(self, pipeline: str, **fields: Any) -> bool:
        """Change ``paused`` or ``last_slot`` of a schedule; False when there is none."""
        assert set(fields) <= {"paused", "last_slot"}, fields
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._write() as conn:
            return conn.execute(f"UPDATE schedules SET {sets} WHERE pipeline = ?",
                                (*fields.values(), pipeline)).rowcount > 0

    def remove_schedule(self, pipeline: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM schedules WHERE pipeline = ?",
                                (pipeline,)).rowcount > 0


def _when(iso: str) -> datetime:
    when = datetime.fromisoformat(iso)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
