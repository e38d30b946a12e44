"""Grids in views: which tasks of a run are one grid's instances, and a one-line summary.

``show``, the CLI progress, the widget and the report show a grid as one line under its
name (``by_region  37/100 done, 2 failed``) so a 500-instance grid stays readable.
"""

from __future__ import annotations

from typing import Iterable

_DONE = ("success", "skipped")
_OTHERS = ("failed", "upstream_failed", "cancelled", "running", "retrying", "queued", "pending")


def groups(run) -> dict[str, list[str]]:
    """Grid name -> its instances' names (in order) for every grid of ``run``."""
    out: dict[str, list[str]] = {}
    for name, task in run.tasks.items():
        if task.grid:
            out.setdefault(task.grid, []).append(name)
    return out


def grid_state(states: Iterable[str]) -> str:
    """One state for a whole grid, the same in every view: busy while any instance is, then
    the worst outcome."""
    states = list(states)
    for state in ("running", "retrying", "queued", "failed", "upstream_failed", "cancelled",
                  "pending"):
        if state in states:
            return state
    return "skipped" if all(s == "skipped" for s in states) else "success"


def summary(states: Iterable[str]) -> str:
    """``37/100 done, 2 failed, 61 pending``: done is success or skipped."""
    states = list(states)
    counts = {s: states.count(s) for s in dict.fromkeys(states)}
    done = sum(counts.get(s, 0) for s in _DONE)
    text = f"{done}/{len(states)} done"
    if counts.get("skipped"):
        text += f" ({counts['skipped']} skipped)"
    return ", ".join([text] + [f"{counts[s]} {s}" for s in _OTHERS if counts.get(s)])
