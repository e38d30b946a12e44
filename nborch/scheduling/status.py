"""``nborch scheduler status``: whether a scheduler holds the store, and what each schedule
waits for (its next slot, or its upstream pipelines' next success)."""

from __future__ import annotations

from datetime import datetime

from . import lock
from .schedules import registered


def status(store, now: datetime) -> dict:
    """The scheduler (``running``, and ``pid``, ``host``, ``since`` when it runs) and each
    schedule: ``next_slot`` for a cron schedule; for an ``after`` one, ``waiting_for`` (the
    upstream pipelines) and ``pending`` (their successes no run was started after yet)."""
    holder = lock.holder(store.home)
    schedules = []
    for s in registered(store):
        next_slot = None if s.paused else s.next_slot(now)
        schedules.append({
            "pipeline": s.pipeline, "paused": s.paused, "cron": s.cron, "timezone": s.timezone,
            "after": list(s.after), "sla": s.sla,
            "next_slot": next_slot.isoformat() if next_slot else None,
            "waiting_for": list(s.after),
            "pending": [r["run_id"] for r in store.untriggered_successes(
                s.pipeline, s.after, s.created_at or "")] if s.after else []})
    return {"store": str(store.home),
            "scheduler": {"running": holder is not None,
                          **{k: (holder or {}).get(k) for k in ("pid", "host", "since")}},
            "schedules": schedules}


def lines(report: dict) -> list[str]:
    """``status`` as text, one line for the scheduler, one per schedule."""
    held = report["scheduler"]
    out = [f"scheduler: running ({lock.describe(held)}) for the store {report['store']}"
           if held["running"] else
           f"scheduler: not running for the store {report['store']} (start it with "
           "`nborch scheduler`; runs are not started until then)"]
    width = max((len(s["pipeline"]) for s in report["schedules"]), default=0)
    for s in report["schedules"]:
        if s["paused"]:
            what = "paused"
        elif s["after"]:
            pending = f"; {len(s['pending'])} success(es) waiting to start a run" \
                if s["pending"] else ""
            what = f"after {', '.join(s['after'])}: waits for the next success{pending}"
        else:
            what = f"next slot {s['next_slot']} ({s['cron']}, {s['timezone']})"
        sla = f", sla {s['sla']:g}s" if s["sla"] else ""
        out.append(f"  {s['pipeline']:<{width}}  {what}{sla}")
    if not report["schedules"]:
        out.append("  no schedules (add one with `nborch schedule add PIPELINE`)")
    return out
