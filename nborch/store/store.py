"""The run store: one SQLite file under ``$NBORCH_HOME`` (default ``.nborch``).

The store writes what events say and never decides a state (finding crashed runs is the one
judgement it makes, from facts: a dead process or a silent heartbeat). Writes are short
``BEGIN IMMEDIATE`` transactions in WAL mode, so several nborch processes can share a store.
The schema version is SQLite's ``user_version``; ``MIGRATIONS`` brings any older store up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..core.clock import utcnow
from ..core.errors import RunNotFound, StoreError, StoreUnusable, error_dict
from ..core.events import AttemptProgress, KernelStarted, RunEnded, RunStarted, TaskStateChanged
from ..core.run import Run, TaskRun, fold_resume, fold_task
from ..core.states import SUCCESSFUL, State
from ..core.private import DIR_MODE, FILE_MODE, makedirs, tighten

DB_NAME = "nborch.db"
HOST = socket.gethostname()
# A run on another host whose heartbeat is older than this is taken for crashed.
STALE_HEARTBEAT_SECONDS = 90.0

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
]
SCHEMA_VERSION = len(MIGRATIONS)


def default_home() -> Path:
    return Path(os.environ.get("NBORCH_HOME") or ".nborch")


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it does not exist.

    With the pid, this identifies a process even after the pid is reused.
    """
    import psutil
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


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
    """The SQLite record of runs in ``home`` (``$NBORCH_HOME``, default ``./.nborch``)."""

    run_type: type[Run] = Run  # what get_run builds (the public API's Run can resume)

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

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
            try:
                makedirs(self.home)
                # The home is its owner's (see private.py). One an older nborch made 0755 is
                # closed here: with the folder 0700, nothing inside it can be reached.
                tighten(self.home, DIR_MODE)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.row_factory = sqlite3.Row
                # SQLite gives the -wal and -shm files it creates later the database's mode.
                for suffix in ("", "-wal", "-shm"):
                    tighten(f"{self.path}{suffix}", FILE_MODE)
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot open the run store {self.path}: {exc}") from None
            self._conn = conn
            self._migrate()
        return self._conn

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"the run store {self.path} has schema version {version}, newer "
                                 f"than this nborch understands ({SCHEMA_VERSION}); upgrade nborch")
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; waits for other processes' transactions."""
        with self._lock:
            conn = self._conn if self._conn is not None else self._connect()
            for delay in (0.05, 0.1, 0.2, 0.5, 1, 2, None):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if delay is None or ("locked" not in str(exc) and "busy" not in str(exc)):
                        raise StoreError(f"cannot write the run store {self.path}: {exc}") from None
                    time.sleep(delay)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"PRAGMA user_version = {version}")  # writes the header
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    conn.execute("ROLLBACK")
                    raise
        except StoreUnusable:
            raise
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
            conn.execute("UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
                         (e.status, e.ended_at, e.run_id))

    def heartbeat(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (time.time(), run_id))

    # -- crashed runs -----------------------------------------------------------------

    def mark_crashed(self) -> list[str]:
        """Mark runs whose orchestrating process is gone as ``crashed``; returns their ids.

        On this host a run is alive while its process (pid and start time) exists; a run of
        another host is alive while its heartbeat is fresh. Kernels a crashed run left on
        this host are stopped.
        """
        if not self.exists:
            return []
        rows = self._read("SELECT run_id, pid, host, pid_started, heartbeat_at FROM runs"
                          " WHERE status = 'running'")
        crashed = [r for r in rows if self._is_dead(r)]
        for row in crashed:
            self._record_crash(row)
        return [r["run_id"] for r in crashed]

    @staticmethod
    def _is_dead(row: sqlite3.Row) -> bool:
        if row["host"] == HOST and row["pid"]:
            started = process_started(row["pid"])
            return started is None or (row["pid_started"] is not None
                                       and abs(started - row["pid_started"]) > 1.0)
        return time.time() - (row["heartbeat_at"] or 0) > STALE_HEARTBEAT_SECONDS

    def _record_crash(self, row: sqlite3.Row) -> None:
        run_id, now = row["run_id"], utcnow()
        why = f"the nborch process (pid {row['pid']} on {row['host']}) died while this task ran"
        error = json.dumps(error_dict("OrchestratorDied", why))
        with self._write() as conn:
            if conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0] \
                    != "running":
                return  # another process recorded it first
            last_beat = datetime.fromtimestamp(row["heartbeat_at"] or time.time(), timezone.utc)
            conn.execute("UPDATE runs SET status = 'crashed', ended_at = ? WHERE run_id = ?",
                         (last_beat.isoformat(timespec="milliseconds"), run_id))
            conn.execute("UPDATE attempts SET status = 'failed', ended_at = ?, error = ?"
                         " WHERE run_id = ? AND status = 'running'", (now, error, run_id))
            conn.execute("UPDATE task_runs SET status = 'failed', ended_at = ?, error = ?,"
                         " progress = NULL, reason = 'the run crashed'"
                         " WHERE run_id = ? AND status = 'running'", (now, error, run_id))
            conn.execute("UPDATE task_runs SET status = 'cancelled', ended_at = ?,"
                         " reason = 'the run crashed before this task could run'"
                         " WHERE run_id = ? AND status IN ('pending', 'queued', 'retrying')",
                         (now, run_id))
        if row["host"] == HOST:
            for attempt in self._read("SELECT kernel_pid FROM attempts WHERE run_id = ? AND"
                                      " kernel_pid IS NOT NULL", (run_id,)):
                stop_orphan_kernel(attempt["kernel_pid"], run_id)

    # -- reading ----------------------------------------------------------------------

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> list[dict]:
        if not self.exists:
            return []
        self.mark_crashed()
        where, args = ("WHERE pipeline = ?", (pipeline,)) if pipeline else ("", ())
        rows = self._read(f"SELECT run_id, pipeline, status, started_at, ended_at FROM runs {where}"
                          " ORDER BY started_at DESC, run_id DESC LIMIT ?", (*args, limit))
        return [dict(r) for r in rows]

    def get_run(self, run_id: str) -> Run:
        if self.exists:
            self.mark_crashed()
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
                   output_dir=r["output_dir"])

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
        self.mark_crashed()
        return [r["status"] for r in self._read(
            "SELECT status FROM runs WHERE pipeline = ? AND logical_date = ?",
            (pipeline, logical_date))]

    def running_count(self, pipeline: str) -> int:
        self.mark_crashed()
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


def stop_orphan_kernel(pid: int, run_id: str) -> bool:
    """Kill a kernel left by a crashed run, if it still runs and is that run's kernel, and
    remove its connection file and IPC sockets (nobody else will)."""
    import psutil
    try:
        proc = psutil.Process(pid)
        if proc.environ().get("NBORCH_RUN_ID") != run_id:
            return False  # the pid was reused by an unrelated process
        cmdline = proc.cmdline()
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return False
    if "-f" in cmdline[:-1]:
        _remove_connection_files(cmdline[cmdline.index("-f") + 1])
    return True


def _remove_connection_files(connection_file: str) -> None:
    try:
        info = json.loads(Path(connection_file).read_text())
    except (OSError, ValueError):
        return
    paths = [connection_file]
    if info.get("transport") == "ipc":
        paths += [f"{info['ip']}-{info[key]}" for key in
                  ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
                  if key in info]
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass
    folder = os.path.dirname(info.get("ip") or "")
    if info.get("transport") == "ipc" and os.path.basename(folder).startswith("nborch-ipc-"):
        try:
            os.rmdir(folder)  # the dead process's private IPC folder, once it is empty
        except OSError:
            pass
