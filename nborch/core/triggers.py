"""How a run started: the one list of the values of a run record's ``trigger``."""

from __future__ import annotations

from enum import Enum
from typing import Any


class Trigger(str, Enum):
    """How a run (last) started: its record's ``trigger``. A ``str``, as ``State`` is."""
    MANUAL = "manual"      # nborch run, Pipeline.run, %%orchestrate
    SCHEDULE = "schedule"  # a slot of nborch scheduler
    BACKFILL = "backfill"  # nborch backfill
    AFTER = "after"        # a run of an upstream pipeline succeeded (schedule: {after: ...})
    RESUME = "resume"      # nborch resume, Run.resume

    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]
    __repr__ = str.__repr__


def trigger_of(value: Any) -> Trigger:
    """``value`` as a ``Trigger``; ValueError naming the allowed values otherwise."""
    try:
        return Trigger(value)
    except ValueError:
        raise ValueError(f"unknown trigger {value!r} (one of: "
                         f"{', '.join(t.value for t in Trigger)})") from None


def shown(trigger: str | None) -> str:
    """A record's trigger as views write it: ``unknown`` for runs recorded before nborch
    kept it (their record's ``trigger`` is null)."""
    return str(trigger) if trigger else "unknown"
