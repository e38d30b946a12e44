"""The run store: one SQLite file under ``$NBORCH_HOME`` (default ``.nborch``).

The store writes what events say and never decides a state (finding crashed runs is the one
judgement it makes, from facts: a dead process or a silent heartbeat; see crashes.py).
Writes are short ``BEGIN IMMEDIATE`` transactions in WAL mode (database.py), so several
nborch processes can share a store; schema.py holds the tables and their migrations, rows.py
how a task's record is read from and written to its row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..core.clock import parse_time, utcnow
from ..core.errors import RunMovedOn, RunNotFound
from ..core.events import AttemptProgress, KernelStarted, RunEnded, RunStarted, TaskStateChanged
from ..core.run import Run, fold_resume
from ..core.states import SUCCESSFUL, State
from .crashes import HOST, crash_events, is_dead, last_beat, process_started, stop_orphan_kernel
from .pools import PoolRecords
from .rows import dumps, fold_into_row, loads, task_run, update_task
from .triggers import TriggerRecords, after_column


class Store(TriggerRecords, PoolRecords):
    """The SQLite record of runs in ``home`` (``$NBORCH_HOME``, default ``./.nborch``).
    ``readonly``: for commands that only read (``runs``, ``show``, the dashboard): never
    writes, never waits for a writer, and works on a read-only copy of the home or a full
    disk."""

    run_type: type[Run] = Run  # what get_run builds (the public API's Run can resume)

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

    def record(self, events: list, resumes: int | None = None) -> None:
        """Write ``events`` in one transaction: all of them, or none. ``resumes``: the
        writer's turn at the run (its ``RunStarted``'s); once the run is recorded crashed or
        resumed by a later turn, a writer of an earlier one records nothing (``RunMovedOn``)."""
        with self._write() as conn:
            if resumes is not None and events and not isinstance(events[0], RunStarted):
                self._check_turn(conn, events[0].run_id, resumes)
            for event in events:
                self(event)

    def _check_turn(self, conn, run_id: str, resumes: int) -> None:
        row = conn.execute("SELECT status, resumes FROM runs WHERE run_id = ?",
                           (run_id,)).fetchone()
        if row is not None and (row["resumes"] != resumes or row["status"] == State.CRASHED):
            now = "resumed" if row["resumes"] != resumes else "recorded crashed"
            raise RunMovedOn(f"run {run_id} was {now} by another nborch process while this one "
                             "still ran it (it had stopped or lost the store for too long): this "
                             "process stops it, and records none of its late results")

    def run_started(self, e: RunStarted) -> None:
        with self._write() as conn:
            if e.resumes:
                conn.execute(
                    "UPDATE runs SET status = ?, ended_at = NULL, pid = ?, host = ?,"
                    " pid_started = ?, heartbeat_at = ?, resumes = ?, trigger = ? WHERE run_id = ?",
                    (State.RUNNING, e.pid, e.host, process_started(e.pid), time.time(), e.resumes,
                     e.trigger, e.run_id))
                for name in e.tasks:
                    update_task(conn, e.run_id, name, fold_resume(e, name))
                return
            conn.execute(
                "INSERT INTO runs (run_id, pipeline, status, started_at, logical_date, params,"
                " source, pid, host, pid_started, heartbeat_at, output_dir, trigger)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.run_id, e.pipeline, State.RUNNING, e.started_at, e.logical_date,
                 json.dumps(e.params), e.source, e.pid, e.host, process_started(e.pid),
                 time.time(), e.output_dir, e.trigger))
            conn.executemany(
                "INSERT INTO task_runs (run_id, task, position, upstream, notebook, grid, command,"
                " products, pool, own_values, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.run_id, name, i, json.dumps(t["upstream"]), t.get("notebook"), t.get("grid"),
                  dumps(t.get("command")), dumps(t.get("products") or None), t.get("pool"),
                  dumps(t.get("own_values")),
                  State.PENDING)
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
                             (e.attempt_status, e.at, e.output_path, dumps(e.error), e.run_id,
                              e.task, e.attempt))
            fold_into_row(conn, e)

    def progress(self, e: AttemptProgress) -> None:
        with self._write() as conn:
            fold_into_row(conn, e)

    def kernel_started(self, e: KernelStarted) -> None:
        with self._write() as conn:
            conn.execute("UPDATE attempts SET kernel_pid = ? WHERE run_id = ? AND task = ?"
                         " AND attempt = ?", (e.pid, e.run_id, e.task, e.attempt))

    def run_ended(self, e: RunEnded) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE run_id = ?",
                         (e.status, e.ended_at, dumps(e.error), e.run_id))

    def heartbeat(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (time.time(), run_id))

    # -- cancelling from another process ------------------------------------------------

    def request_cancel(self, run_id: str) -> str:
        """Ask the process running ``run_id`` to cancel it (its engine looks at each
        heartbeat); returns the run's status, and asks nothing unless it is running."""
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in the store {self.path} (see `nborch runs`)")
            if row["status"] == State.RUNNING:
                conn.execute("UPDATE runs SET cancel_requested = ? WHERE run_id = ?",
                             (utcnow(), run_id))
            return row["status"]

    def cancel_requested(self, run_id: str) -> bool:
        rows = self._read("SELECT cancel_requested FROM runs WHERE run_id = ?", (run_id,))
        return bool(rows and rows[0]["cancel_requested"])

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
                conn.execute("DELETE FROM pool_slots WHERE run_id = ?", (run.run_id,))
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
                and parse_time(r["started_at"]) >= parse_time(since[r["pipeline"]])]

    def crash_reported(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET crash_reported = 1 WHERE run_id = ?", (run_id,))

    # -- reading ----------------------------------------------------------------------

    def list_runs(self, pipeline: str | None = None, limit: int | None = 50, *,
                  status: str | None = None, since: str | None = None) -> list[dict]:
        """The newest runs (of ``pipeline``, in ``status``, started at or after the ISO time
        ``since``), at most ``limit``; one whose process died shows as ``crashed`` (see
        ``mark_crashed``)."""
        if not self.exists:
            return []
        where, args = self._run_filter(pipeline, status, since)
        # A running run may read as crashed, so those two states are filtered after reading.
        limited = limit is not None and status not in (State.RUNNING, State.CRASHED)
        rows = self._read("SELECT run_id, pipeline, status, started_at, ended_at, logical_date,"
                          f" trigger, pid, host, pid_started, heartbeat_at FROM runs {where}"
                          " ORDER BY started_at DESC, run_id DESC"
                          + (" LIMIT ?" if limited else ""), (*args, limit) if limited else args)
        listed = []
        for r in rows:
            row = {k: r[k] for k in ("run_id", "pipeline", "status", "started_at", "ended_at",
                                     "logical_date", "trigger")}
            if r["status"] == State.RUNNING and is_dead(r):
                row["status"], row["ended_at"] = State.CRASHED, last_beat(r)
            if status is None or row["status"] == status:
                listed.append(row)
        return listed[:limit] if limit is not None else listed

    def count_runs(self, pipeline: str | None = None, *, status: str | None = None,
                   since: str | None = None) -> int:
        """How many runs ``list_runs`` would list with no limit."""
        if status in (State.RUNNING, State.CRASHED):
            return len(self.list_runs(pipeline, None, status=status, since=since))
        if not self.exists:
            return 0
        where, args = self._run_filter(pipeline, status, since)
        return self._read(f"SELECT count(*) FROM runs {where}", args)[0][0]

    @staticmethod
    def _run_filter(pipeline: str | None, status: str | None,
                    since: str | None) -> tuple[str, tuple]:
        conditions, args = [], []
        if pipeline:
            conditions.append("pipeline = ?")
            args.append(pipeline)
        if status == State.CRASHED:
            conditions.append("status IN ('running', 'crashed')")
        elif status is not None:
            conditions.append("status = ?")
            args.append(status)
        if since:
            conditions.append("started_at >= ?")
            args.append(since)
        return ("WHERE " + " AND ".join(conditions) if conditions else ""), tuple(args)

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
        tasks = {t["task"]: task_run(t) for t in rows}
        return self.run_type(run_id=r["run_id"], pipeline=r["pipeline"], status=r["status"],
                   started_at=r["started_at"], ended_at=r["ended_at"],
                   logical_date=r["logical_date"], params=json.loads(r["params"]),
                   source=r["source"], tasks=tasks, resumes=r["resumes"], home=self.home,
                   output_dir=r["output_dir"], error=loads(r["error"]), trigger=r["trigger"])

    def attempts(self, run_id: str, task: str | None = None) -> list[dict]:
        sql = ("SELECT run_id, task, attempt, status, started_at, ended_at, output_path, error"
               " FROM attempts WHERE run_id = ?")
        args: tuple = (run_id,)
        if task is not None:
            sql += " AND task = ?"
            args += (task,)
        rows = self._read(sql + " ORDER BY started_at, attempt", args)
        return [{**dict(r), "error": loads(r["error"])} for r in rows]

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
                "values": loads(row["vals"]) or {}, "fingerprint": row["fingerprint"],
                "result_of": row["result_of"] or row["run_id"]}

    def last_successes(self) -> dict[str, str]:
        """When each pipeline's newest successful run ended: pipeline -> ISO time (UTC)."""
        if not self.exists:
            return {}
        return {r["pipeline"]: r["ended"] for r in self._read(
            "SELECT pipeline, max(ended_at) AS ended FROM runs WHERE status = ?"
            " GROUP BY pipeline ORDER BY pipeline", (State.SUCCESS,))}

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
        d["cron"], d["after_pipelines"] = d["cron"] or "", after_column(d["after"])
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO schedules (pipeline, source, cron, timezone, catchup,"
                " max_active_runs, paused, last_slot, created_at, after_pipelines, sla,"
                " sla_checked, params) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*(d[k] for k in ("pipeline", "source", "cron", "timezone", "catchup",
                                  "max_active_runs", "paused", "last_slot", "created_at",
                                  "after_pipelines", "sla", "sla_checked")),
                 json.dumps(d["params"])))

    def schedule_records(self) -> list[dict]:
        """The schedules' rows, by pipeline (``scheduling.schedules.registered`` reads them
        as ``Schedule`` objects)."""
        if not self.exists:
            return []
        records = []
        for r in self._read("SELECT * FROM schedules ORDER BY pipeline"):
            record = {**dict(r), "catchup": bool(r["catchup"]), "paused": bool(r["paused"]),
                      "cron": r["cron"] or None, "params": json.loads(r["params"]),
                      "after": tuple(json.loads(r["after_pipelines"] or "[]"))}
            del record["after_pipelines"]
            records.append(record)
        return records

    def update_schedule(self, pipeline: str, **fields: Any) -> bool:
        """Change ``paused``, ``last_slot`` or ``sla_checked`` of a schedule; False when there
        is none."""
        assert set(fields) <= {"paused", "last_slot", "sla_checked"}, fields
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._write() as conn:
            return conn.execute(f"UPDATE schedules SET {sets} WHERE pipeline = ?",
                                (*fields.values(), pipeline)).rowcount > 0

    def remove_schedule(self, pipeline: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM schedules WHERE pipeline = ?",
                                (pipeline,)).rowcount > 0

