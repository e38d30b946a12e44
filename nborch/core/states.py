"""The states of task runs, runs and attempts (SPEC section 3): one enum, the sets the rules
are written in, and each state's colours (``core.grouping`` sums a grid's states up).

A ``State`` is a ``str`` (a StrEnum, written out since Python 3.10 has no ``enum.StrEnum``):
it equals, hashes, formats, prints, pickles and is stored and written as JSON as its value,
so ``State.RUNNING == "running"`` and the store's strings are unchanged. Records read back
from the store hold plain strings, live ones may hold members; the two compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class State(str, Enum):
    PENDING = "pending"                  # waiting for its upstream tasks
    QUEUED = "queued"                    # may run, waiting for a free slot
    RUNNING = "running"                  # a task's attempt, or a run, is under way
    RETRYING = "retrying"                # an attempt failed; another follows after a delay
    SUCCESS = "success"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"  # not run: a task it needs failed
    SKIPPED = "skipped"                  # not run: up to date, or its trigger rule said no
    CANCELLED = "cancelled"
    CRASHED = "crashed"                  # a run whose orchestrating process died

    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]
    __repr__ = str.__repr__  # 'running', as before the enum, in reprs and messages


# What each kind of record can be in, in the order views list them.
TASK_STATES = (State.PENDING, State.QUEUED, State.RUNNING, State.RETRYING, State.SUCCESS,
               State.FAILED, State.UPSTREAM_FAILED, State.SKIPPED, State.CANCELLED)
RUN_STATES = (State.RUNNING, State.SUCCESS, State.FAILED, State.CANCELLED, State.CRASHED)
ATTEMPT_STATES = (State.SUCCESS, State.FAILED, State.CANCELLED, State.RUNNING)

# A task in one of these will not change again in this run (a resume may run it again).
FINAL = frozenset({State.SUCCESS, State.FAILED, State.UPSTREAM_FAILED, State.SKIPPED,
                   State.CANCELLED})
# Done well: its downstream tasks may run (all_success), a resume keeps it, a grid counts it
# as done.
SUCCESSFUL = frozenset({State.SUCCESS, State.SKIPPED})
# Failed itself or because of its upstream: the run fails, one_failed triggers fire.
FAILURES = frozenset({State.FAILED, State.UPSTREAM_FAILED})
# Not started: a change to one of these records nothing but the state.
UNSTARTED = frozenset({State.PENDING, State.QUEUED})
# Waiting to run: cancelling the run (or its crash) cancels these.
WAITING = frozenset({State.PENDING, State.QUEUED, State.RETRYING})
# Under way, busiest first: what a live view lists.
ACTIVE = (State.RUNNING, State.RETRYING, State.QUEUED)
# Ended without running: the task's reason says why (``cancelled``: or why it was stopped).
NOT_RUN = frozenset({State.UPSTREAM_FAILED, State.CANCELLED, State.SKIPPED})
# Views show the reason of a task in one of these: why it did not run, or which pool it
# waits for (queued).
REASON_SHOWN = NOT_RUN | {State.QUEUED}
# Its last attempt failed: views show that attempt's error.
LAST_ATTEMPT_FAILED = frozenset({State.FAILED, State.RETRYING})


@dataclass(frozen=True)
class Colours:
    fill: str          # graphs, HTML swatches, the report's timeline (CSS colour)
    terminal: str      # the terminal (a rich style)
    bar: str = "info"  # the widget's progress bar, for a run's state (ipywidgets bar_style)


COLOURS: dict[str, Colours] = {  # keyed by State; plain strings find them too
    State.PENDING: Colours("#e5e7eb", "grey70"),
    State.QUEUED: Colours("#c7d2fe", "cyan"),
    State.RUNNING: Colours("#93c5fd", "blue"),
    State.RETRYING: Colours("#fde68a", "yellow"),
    State.SUCCESS: Colours("#86efac", "green", "success"),
    State.FAILED: Colours("#fca5a5", "red", "danger"),
    State.UPSTREAM_FAILED: Colours("#fdba74", "dark_orange"),
    State.SKIPPED: Colours("#d1d5db", "grey50"),
    State.CANCELLED: Colours("#a8a29e", "grey50", "warning"),
    State.CRASHED: Colours("#f0abfc", "magenta", "danger"),
}
NEUTRAL = "#f3f4f6"  # the fill of a node with no state (a pipeline drawn before any run)


def fill(state: str | None, default: str = NEUTRAL) -> str:
    """The fill colour of ``state`` (``default`` for None or a string that is no state)."""
    colours = COLOURS.get(state) if state else None
    return colours.fill if colours else default


def terminal_style(state: str | None) -> str:
    """The rich style of ``state`` ('' for none)."""
    colours = COLOURS.get(state) if state else None
    return colours.terminal if colours else ""
