"""What the scheduler did once and must not do again after a restart: the slots whose SLA
it found missed (and alerted), and the upstream successes it started runs after."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from ..core.clock import utcnow
from .database import Database


class TriggerRecords(Database):
    """The store's ``sla_misses`` and ``after_triggers`` tables (``Store`` has these
    methods)."""

    # -- SLA --------------------------------------------------------------------------

    def slot_runs(self, pipeline: str, logical_date: str) -> list[dict]:
        """The runs of ``pipeline`` for one logical date, newest first."""
        if not self.exists:
            return []
        return [dict(r) for r in self._read(
            "SELECT run_id, status, started_at, ended_at FROM runs WHERE pipeline = ? AND"
            " logical_date = ? ORDER BY started_at DESC", (pipeline, logical_date))]

    def record_sla_miss(self, pipeline: str, slot: str, run_id: str | None,
                        status: str | None) -> bool:
        """Note that ``slot`` missed its SLA; False when that was noted before (by this or
        an earlier scheduler), so its alert fires once."""
        with self._write() as conn:
            return conn.execute(
                "INSERT OR IGNORE INTO sla_misses (pipeline, slot, run_id, status, fired_at)"
                " VALUES (?, ?, ?, ?, ?)", (pipeline, slot, run_id, status, utcnow())
            ).rowcount > 0

    def sla_misses(self, pipeline: str | None = None) -> list[dict]:
        if not self.exists:
            return []
        where, args = ("WHERE pipeline = ?", (pipeline,)) if pipeline else ("", ())
        return [dict(r) for r in self._read(
            f"SELECT * FROM sla_misses {where} ORDER BY pipeline, slot", args)]

    # -- after: -----------------------------------------------------------------------

    def untriggered_successes(self, pipeline: str, upstream: tuple[str, ...],
                              since: str) -> list[dict]:
        """Successful runs of the ``upstream`` pipelines that ended at or after ``since`` (ISO,
        UTC) and started no run of ``pipeline`` yet, oldest first."""
        if not self.exists or not upstream:
            return []
        # Compared as text with ended_at, which is always UTC to the millisecond.
        since = datetime.fromisoformat(since).astimezone(timezone.utc).isoformat(
            timespec="milliseconds") if since else ""
        marks = ", ".join("?" * len(upstream))
        return [dict(r) for r in self._read(
            "SELECT run_id, pipeline, logical_date, ended_at FROM runs r WHERE status ="
            f" 'success' AND pipeline IN ({marks}) AND ended_at >= ? AND NOT EXISTS (SELECT 1"
            " FROM after_triggers a WHERE a.pipeline = ? AND a.upstream_run_id = r.run_id)"
            " ORDER BY ended_at, run_id", (*upstream, since, pipeline))]

    def claim_trigger(self, pipeline: str, upstream_run_id: str) -> bool:
        """Note that the success ``upstream_run_id`` is starting a run of ``pipeline``; False
        when it already did. Noted before the run starts: a scheduler killed in between
        starts none for it (never two)."""
        with self._write() as conn:
            return conn.execute(
                "INSERT OR IGNORE INTO after_triggers (pipeline, upstream_run_id, at)"
                " VALUES (?, ?, ?)", (pipeline, upstream_run_id, utcnow())).rowcount > 0

    def trigger_started(self, pipeline: str, upstream_run_id: str, run_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE after_triggers SET run_id = ? WHERE pipeline = ? AND"
                         " upstream_run_id = ?", (run_id, pipeline, upstream_run_id))

    def triggers(self, pipeline: str) -> list[dict]:
        """The upstream runs that started runs of ``pipeline`` (and those runs' ids)."""
        if not self.exists:
            return []
        return [dict(r) for r in self._read(
            "SELECT upstream_run_id, run_id, at FROM after_triggers WHERE pipeline = ?"
            " ORDER BY at", (pipeline,))]

    def known_pipelines(self) -> set[str]:
        """Pipelines this store has a run or a schedule of."""
        if not self.exists:
            return set()
        return {r[0] for r in self._read("SELECT DISTINCT pipeline FROM runs UNION"
                                         " SELECT pipeline FROM schedules")}


def after_column(after) -> str | None:
    return json.dumps(list(after)) if after else None
