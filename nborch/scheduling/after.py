"""Schedules that run after other pipelines: ``schedule: {after: [ingest]}`` starts a run
each time a run of ``ingest`` succeeds on this store, with that run's logical date. Which
successes already started a run is in the store (``Store.claim_trigger``); only those that
end after the schedule was added count.

The pipelines and their ``after`` form a graph that must have no cycle (``a`` after ``b``
after ``a`` would run forever), and ``after`` must name a pipeline the store knows (one
it has a run or a schedule of): both are checked by ``nborch schedule add``; the scheduler
refuses to start on a cycle and warns of a name it does not know."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..core.errors import SpecError
from .schedules import Schedule


def cycle(schedules: Iterable[Schedule]) -> list[str] | None:
    """A cycle of pipelines each scheduled after the next (first one repeated at the end),
    or None."""
    edges = {s.pipeline: s.after for s in schedules if s.after}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done or name not in edges:
            return None
        for upstream in edges[name]:
            found = visit(upstream, [*path, name])
            if found:
                return found
        done.add(name)
        return None

    for name in sorted(edges):
        found = visit(name, [])
        if found:
            return found
    return None


def check_cycles(schedules: Iterable[Schedule]) -> None:
    """Raise ``SpecError`` naming the cycle, if the schedules' ``after`` form one."""
    found = cycle(schedules)
    if found:
        chain = " after ".join(found)
        raise SpecError(f"schedules run after one another in a cycle: {chain}; runs would "
                        f"trigger each other forever (remove {found[0]!r} from the after: of "
                        f"{found[-2]!r}, or schedule one of them on cron)")


def unknown_upstreams(schedule: Schedule, known: set[str]) -> list[str]:
    """Messages for each pipeline in ``schedule.after`` the store has no run or schedule of
    (with a close name, if there is one)."""
    messages = []
    for name in schedule.after:
        if name in known or name == schedule.pipeline:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        messages.append(f"{schedule.pipeline} runs after {name!r}, a pipeline this store has "
                        f"no run or schedule of ({hint}run or schedule {name!r} first)")
    return messages


def check_new(schedule: Schedule, others: list[Schedule], known: set[str]) -> None:
    """What ``nborch schedule add`` refuses: an upstream the store does not know, or a cycle
    with the schedules already registered."""
    problems = unknown_upstreams(schedule, known)
    if problems:
        raise SpecError(problems)
    check_cycles([*(s for s in others if s.pipeline != schedule.pipeline), schedule])
