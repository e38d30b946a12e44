"""Pools in the store: their sizes, and the slots running tasks of any run hold in them.

A slot is a row of ``pool_slots``, taken in one ``BEGIN IMMEDIATE`` transaction (so two
processes cannot both take the last one) and deleted when the attempt ends. A slot whose
run ended or whose process died (crashes.py) holds nothing: the next taker frees it.
"""

from __future__ import annotations

import sqlite3

from ..core.clock import utcnow
from ..core.model import Pipeline
from ..core.states import FINAL, State
from .crashes import is_dead
from .database import Database

_HOLDERS = ("SELECT s.run_id, s.task, s.acquired_at, r.status, r.pid, r.host, r.pid_started,"
            " r.heartbeat_at FROM pool_slots s LEFT JOIN runs r ON r.run_id = s.run_id"
            " WHERE s.pool = ? ORDER BY s.acquired_at")


def _holds(row: sqlite3.Row) -> bool:
    """Whether a slot's holder still runs: its run is running and its process alive."""
    return row["status"] == State.RUNNING and not is_dead(row)


class PoolRecords(Database):
    """The ``pools`` and ``pool_slots`` tables (``Store`` is one)."""

    def set_pool(self, name: str, slots: int) -> int | None:
        """Create pool ``name`` or resize it; returns its slots before (None if new)."""
        now = utcnow()
        with self._write() as conn:
            row = conn.execute("SELECT slots FROM pools WHERE name = ?", (name,)).fetchone()
            conn.execute("INSERT INTO pools (name, slots, created_at, updated_at)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                         " slots = excluded.slots, updated_at = excluded.updated_at",
                         (name, slots, now, now))
        return None if row is None else row["slots"]

    def remove_pool(self, name: str) -> bool:
        """Remove pool ``name``; False when there is none. The caller checks ``pool_users``."""
        with self._write() as conn:
            conn.execute("DELETE FROM pool_slots WHERE pool = ?", (name,))
            return conn.execute("DELETE FROM pools WHERE name = ?", (name,)).rowcount > 0

    def pool_names(self) -> set[str]:
        if not self.exists:
            return set()
        return {r["name"] for r in self._read("SELECT name FROM pools")}

    def known_pools(self, pipeline: Pipeline) -> set[str] | None:
        """The pools set here, for ``prepare`` to check a pipeline's against; None (the
        store not even opened) when no task of ``pipeline`` has a pool."""
        if not any(t.pool for t in pipeline.tasks.values()):
            return None
        return self.pool_names()

    def pool_users(self, name: str) -> list[str]:
        """Live runs with a task in pool ``name`` that has not ended, oldest first."""
        if not self.exists:
            return []
        rows = self._read(
            "SELECT DISTINCT r.run_id, r.started_at, r.status, r.pid, r.host, r.pid_started,"
            " r.heartbeat_at FROM task_runs t JOIN runs r ON r.run_id = t.run_id"
            f" WHERE t.pool = ? AND r.status = 'running' AND t.status NOT IN"
            f" ({', '.join('?' * len(FINAL))}) ORDER BY r.started_at", (name, *sorted(FINAL)))
        return [r["run_id"] for r in rows if not is_dead(r)]

    def pools(self) -> list[dict]:
        """Each pool: its slots, the tasks holding one (``running``), and how many tasks
        of live runs wait for one (``queued``)."""
        if not self.exists:
            return []
        out = []
        for pool in self._read("SELECT name, slots FROM pools ORDER BY name"):
            holders = [{"run_id": h["run_id"], "task": h["task"], "since": h["acquired_at"]}
                       for h in self._read(_HOLDERS, (pool["name"],)) if _holds(h)]
            waiting = self._read(
                "SELECT r.run_id, r.status, r.pid, r.host, r.pid_started, r.heartbeat_at"
                " FROM task_runs t JOIN runs r ON r.run_id = t.run_id WHERE t.pool = ?"
                " AND t.status = ? AND r.status = 'running'", (pool["name"], State.QUEUED))
            out.append({"name": pool["name"], "slots": pool["slots"], "running": holders,
                        "queued": sum(not is_dead(r) for r in waiting)})
        return out

    def acquire_slot(self, pool: str, run_id: str, task: str) -> bool | None:
        """Take a slot of ``pool`` for a task's attempt: True when taken (or held already),
        False when every slot is held, None when there is no such pool. Slots of ended or
        dead runs are freed first, when they are in the way."""
        with self._write() as conn:
            size = conn.execute("SELECT slots FROM pools WHERE name = ?", (pool,)).fetchone()
            if size is None:
                return None
            holders = conn.execute(_HOLDERS, (pool,)).fetchall()
            if any(h["run_id"] == run_id and h["task"] == task for h in holders):
                return True
            if len(holders) >= size["slots"]:
                stale = [h for h in holders if not _holds(h)]
                if len(holders) - len(stale) >= size["slots"]:
                    return False
                conn.executemany("DELETE FROM pool_slots WHERE run_id = ? AND task = ?",
                                 [(h["run_id"], h["task"]) for h in stale])
            conn.execute("INSERT INTO pool_slots (pool, run_id, task, acquired_at)"
                         " VALUES (?, ?, ?, ?)", (pool, run_id, task, utcnow()))
            return True

    def release_slot(self, run_id: str, task: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM pool_slots WHERE run_id = ? AND task = ?", (run_id, task))

    def release_slots(self, run_id: str) -> None:
        """Free every slot ``run_id`` holds (its start, its end, its crash)."""
        if not self.exists:
            return
        with self._write() as conn:
            conn.execute("DELETE FROM pool_slots WHERE run_id = ?", (run_id,))
