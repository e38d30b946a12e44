"""Grids in views: which tasks of a run are one grid's instances, and a one-line summary.

``show``, the CLI progress, the widget and the report show a grid as one line under its
name (``by_region  37/100 done, 2 failed``) so a 500-instance grid stays readable.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from .states import ACTIVE, SUCCESSFUL, State

# A grid is in the first of these that one of its instances is in: busy while any instance
# is, then the worst outcome; then skipped when every instance was, else success.
_PRECEDENCE = (*ACTIVE, State.FAILED, State.UPSTREAM_FAILED, State.CANCELLED, State.PENDING)
# What a summary counts after "done", in this order.
_OTHERS = (State.FAILED, State.UPSTREAM_FAILED, State.CANCELLED, State.RUNNING,
           State.RETRYING, State.QUEUED, State.PENDING)


def groups(run) -> dict[str, list[str]]:
    """Grid name -> its instances' names (in order) for every grid of ``run``: worked out
    once per run, since the views ask at every update (a run's tasks are set when it
    starts; should they change, it is worked out again). Not to be changed by callers."""
    key = (id(run.tasks), len(run.tasks))
    if run.grid_cache is None or run.grid_cache[0] != key:
        out: dict[str, list[str]] = {}
        for name, task in run.tasks.items():
            if task.grid:
                out.setdefault(task.grid, []).append(name)
        run.grid_cache = (key, out)
    return run.grid_cache[1]


def own_values(grids: Mapping[str, Sequence[str]], parameters: Mapping[str, dict]
               ) -> dict[str, dict]:
    """Each grid instance's own parameters: those whose values differ between the instances
    of its grid (``{"n": 197}``), what tells ``tiny-197`` from ``tiny-198``. ``grids``: grid
    name -> its instances; ``parameters``: instance -> its parameters."""
    out = {}
    for names in grids.values():
        params = [parameters.get(n) or {} for n in names]
        keys = [k for k in params[0]
                if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params}) > 1]
        for name, values in zip(names, params):
            out[name] = {k: values.get(k) for k in keys}
    return out


def grid_state(states: Iterable[str]) -> State:
    """One state for a whole grid, the same in every view."""
    present = set(states)
    for state in _PRECEDENCE:
        if state in present:
            return state
    return State.SKIPPED if present <= {State.SKIPPED} else State.SUCCESS


def done_count(states: Iterable[str]) -> int:
    """How many of ``states`` are done: success or skipped."""
    return sum(1 for s in states if s in SUCCESSFUL)


def summary(states: Iterable[str]) -> str:
    """``37/100 done, 2 failed, 61 pending``: done is success or skipped."""
    return counted_summary(Counter(states))


def counted_summary(counts: Mapping[str, int]) -> str:
    """``summary`` of a grid whose instances are counted by state (a view that keeps the
    counts up to date pays nothing per instance)."""
    done = sum(n for s, n in counts.items() if s in SUCCESSFUL)
    text = f"{done}/{sum(counts.values())} done"
    if counts.get(State.SKIPPED):
        text += f" ({counts[State.SKIPPED]} skipped)"
    return ", ".join([text] + [f"{counts[s]} {s}" for s in _OTHERS if counts.get(s)])
