"""Events the engine emits; the store writer, CLI, widget and hooks all listen to them."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("nborch")

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
    output_dir: str | None = None  # where executed notebooks go (default: the store)


@dataclass(frozen=True)
class TaskStateChanged:
    run_id: str
    task: str
    state: str  # a task state (core.states)
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
    status: str  # a run state (core.states)
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


class Throttle:
    """Calls ``emit(latest)`` at most once per ``interval`` seconds, always delivering the
    latest value in the end (a trailing call), so a burst of updates costs a few calls and
    a long-running step is still shown."""

    def __init__(self, emit: Callable[[Any], None], interval: float):
        self._emit = emit
        self.interval = interval
        self._lock = threading.Lock()
        self._latest: Any = None
        self._last = 0.0
        self._timer: threading.Timer | None = None

    def __call__(self, value: Any) -> None:
        import time
        with self._lock:
            self._latest = value
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._fire)
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._last = time.monotonic()
        self._emit(value)

    def _fire(self) -> None:
        import time
        with self._lock:
            self._timer = None
            value, self._last = self._latest, time.monotonic()
        self._emit(value)

    def close(self) -> None:
        """Drop a pending trailing call (the step it would report is over)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
