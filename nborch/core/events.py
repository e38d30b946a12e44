"""Events the engine emits; the store writer, CLI, widget and hooks all listen to them."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .triggers import Trigger

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
    trigger: str = Trigger.MANUAL  # how it started (resumed: RESUME)


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
    error: dict | None = None  # why the run failed when no task says (it could not start)


Event = Any
Listener = Callable[[Event], None]


class EventBus:
    """Delivers a run's events, in one total order, to two kinds of listener.

    Critical listeners (the store's recorder, the live Run) are called under the bus's
    lock, in the emitting thread, before ``emit`` returns: what the engine does next may
    depend on them. One that raises is logged and ``on_critical_failure(exc)`` is called
    (the engine stops the run there: a run the store cannot record must not go on).

    Every other listener (hooks, lineage, views) is best-effort and never called or waited
    for under the lock: events queue, and whichever emitting thread finds nobody delivering
    delivers the queue in order, so a slow view or a hook waiting for its webhook holds up
    no other thread's ``emit``. One that raises is logged and skipped. ``flush()`` waits
    until every event emitted so far has been delivered.
    """

    def __init__(self) -> None:
        self.critical: list[Listener] = []
        self.listeners: list[Listener] = []
        self.on_critical_failure: Callable[[Exception], None] | None = None
        self._lock = threading.Lock()
        self._delivering = threading.Lock()
        self._outbox: deque = deque()

    def subscribe(self, listener: Listener, critical: bool = False) -> None:
        with self._lock:
            (self.critical if critical else self.listeners).append(listener)

    def emit(self, event: Event) -> None:
        failure = None
        with self._lock:
            for listener in self.critical:
                try:
                    listener(event)
                except Exception as exc:
                    log.exception("critical listener %r failed on %s", listener,
                                  type(event).__name__)
                    failure = failure or exc
            self._outbox.append(event)
        if failure is not None and self.on_critical_failure is not None:
            self.on_critical_failure(failure)
        self._deliver(wait=False)

    def flush(self) -> None:
        self._deliver(wait=True)

    def _deliver(self, wait: bool) -> None:
        while True:
            if not self._delivering.acquire(blocking=wait):
                return  # the thread delivering now delivers this event too
            try:
                while True:
                    with self._lock:
                        if not self._outbox:
                            break
                        event = self._outbox.popleft()
                        listeners = list(self.listeners)
                    for listener in listeners:
                        try:
                            listener(event)
                        except Exception:
                            log.exception("event listener %r failed on %s", listener,
                                          type(event).__name__)
            finally:
                self._delivering.release()
            # An event queued while this thread delivered (its emitter found the delivery
            # lock taken and left it here) is delivered by another turn.
            if not self._outbox:
                return


class _Timers:
    """One thread for the trailing calls of every ``Throttle`` of the process: a
    ``threading.Timer`` each would start a thread for nearly every attempt."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list = []  # heap of (when, number, [callback or None when cancelled])
        self._count = 0
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, callback: Callable[[], None]) -> list:
        """Call ``callback`` in ``delay`` seconds; returns a handle for ``cancel``."""
        import heapq
        import time
        handle = [callback]
        with self._cond:
            self._count += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._count, handle))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._serve, name="nborch-timers",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    @staticmethod
    def cancel(handle: list) -> None:
        handle[0] = None

    def _serve(self) -> None:
        import heapq
        import time
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                callback = heapq.heappop(self._due)[2][0]
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("nborch: a delayed call failed")


_timers = _Timers()


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
        self._timer: list | None = None  # the pending trailing call's handle

    def __call__(self, value: Any) -> None:
        import time
        with self._lock:
            self._latest = value
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = _timers.call_later(wait, self._fire)
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
                _timers.cancel(self._timer)
                self._timer = None
