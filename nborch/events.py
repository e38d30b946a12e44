"""Events the engine emits; the store writer, CLI, widget and hooks all listen to them."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("nborch")

# Task-run states (SPEC section 3) and which of them are final.
PENDING, QUEUED, RUNNING, RETRYING = "pending", "queued", "running", "retrying"
SUCCESS, FAILED, UPSTREAM_FAILED, SKIPPED, CANCELLED = (
    "success", "failed", "upstream_failed", "skipped", "cancelled")
TASK_STATES = (PENDING, QUEUED, RUNNING, RETRYING, SUCCESS, FAILED, UPSTREAM_FAILED, SKIPPED,
               CANCELLED)
FINAL_TASK_STATES = frozenset({SUCCESS, FAILED, UPSTREAM_FAILED, SKIPPED, CANCELLED})
RUN_STATES = ("running", "success", "failed", "cancelled", "crashed")


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    pipeline: str
    started_at: str
    logical_date: str
    params: dict
    tasks: dict  # name -> {"upstream": [...], "notebook": path}
    source: str | None
    pid: int
    host: str
    resumes: int = 0        # 0 for a new run; n for its n-th resume
    rerun: tuple = ()       # on a resume: the tasks that run again


@dataclass(frozen=True)
class TaskStateChanged:
    run_id: str
    task: str
    state: str
    attempt: int
    at: str
    error: dict | None = None
    values: dict | None = None
    output_path: str | None = None
    reason: str | None = None  # why a task was not run (upstream_failed, cancelled, skipped)
    attempt_status: str | None = None  # set when this change ends an attempt: its outcome
    fingerprint: str | None = None  # what the task's result depends on (incremental runs)
    result_of: str | None = None    # the run whose execution produced the task's outputs


@dataclass(frozen=True)
class KernelStarted:
    run_id: str
    task: str
    attempt: int
    pid: int


@dataclass(frozen=True)
class AttemptProgress:
    run_id: str
    task: str
    attempt: int
    cell: int    # cells done
    cells: int   # cells in all
    line: str    # first line of the running cell ('' when done)


@dataclass(frozen=True)
class AttemptOutput:
    run_id: str
    task: str
    attempt: int
    stream: str  # stdout | stderr
    text: str


@dataclass(frozen=True)
class RunEnded:
    run_id: str
    status: str
    ended_at: str


Event = Any
Listener = Callable[[Event], None]


@dataclass
class EventBus:
    """Calls every listener for every event, in the emitting thread.

    A listener that raises is logged and skipped: a broken view never stops a run.
    """

    listeners: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event: Event) -> None:
        with self._lock:  # listeners see events in one total order
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener %r failed on %s", listener, type(event).__name__)
