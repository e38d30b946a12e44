"""SLAs: ``sla: 1h`` in a schedule means each slot's run must have succeeded within an hour
of the slot. The scheduler judges each slot once its deadline has passed, oldest first: a
slot with no success by then (never started, still running, failed) missed it. A miss is
noted in the store before its alert is sent, and the schedule remembers the newest slot
judged, so a restarted scheduler judges no slot twice and alerts no miss twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..core.states import State
from .schedules import Schedule

SLOTS_PER_TICK = 100  # judged at most per schedule and tick; the rest at the next tick


@dataclass(frozen=True)
class SlaMiss:
    pipeline: str
    slot: datetime        # in the schedule's zone
    deadline: datetime
    sla: float            # seconds
    run: dict | None      # the slot's newest run (run_id, status, started_at, ended_at)


def judge(store, schedule: Schedule, now: datetime,
          alert: Callable[[SlaMiss], None]) -> list[SlaMiss]:
    """Judge the slots of ``schedule`` whose deadline passed by ``now`` and were not judged
    yet; ``alert`` each miss not noted before. Returns the misses alerted."""
    if not schedule.sla or not schedule.cron:
        return []
    horizon = now - timedelta(seconds=schedule.sla)  # slots up to here are past their deadline
    start = datetime.fromisoformat(schedule.sla_checked or schedule.created_at
                                   or horizon.isoformat())
    if schedule.paused:  # no runs were wanted: its slots are not late, now or after a resume
        if next(schedule.slots(start, horizon), None) is not None:
            store.update_schedule(schedule.pipeline, sla_checked=horizon.isoformat())
        return []
    alerted, judged = [], None
    for n, slot in enumerate(schedule.slots(start, horizon)):
        if n == SLOTS_PER_TICK:
            break
        judged = slot
        deadline = slot + timedelta(seconds=schedule.sla)
        runs = store.slot_runs(schedule.pipeline, slot.isoformat())
        if any(r["status"] == State.SUCCESS and r["ended_at"]
               and datetime.fromisoformat(r["ended_at"]) <= deadline for r in runs):
            continue
        run = _as_now(store, runs[0]) if runs else None
        miss = SlaMiss(schedule.pipeline, slot, deadline, schedule.sla, run)
        if store.record_sla_miss(schedule.pipeline, slot.isoformat(),
                                 run and run["run_id"], run and run["status"]):
            alert(miss)
            alerted.append(miss)
    if judged is not None:
        store.update_schedule(schedule.pipeline, sla_checked=judged.isoformat())
    return alerted


def next_deadline(schedule: Schedule, now: datetime) -> datetime | None:
    """When the next slot not judged yet passes its deadline (None: no SLA)."""
    if not schedule.sla or not schedule.cron or schedule.paused:
        return None
    start = datetime.fromisoformat(schedule.sla_checked or schedule.created_at
                                   or now.isoformat())
    slot = next(schedule.slots(start, None), None)
    return slot + timedelta(seconds=schedule.sla) if slot else None


def _as_now(store, run: dict) -> dict:
    """A run listed as running whose process died is reported as crashed."""
    if run["status"] == State.RUNNING:
        return {**run, "status": State(store.get_run(run["run_id"]).status).value}
    return run
