"""The store as a run's critical listener: every event is recorded, or the run knows why not.

A write that fails for a while (a full disk, an I/O error, a lock held too long) does not
stop the run: that event and every later one are kept in memory, in order, and written
together once the store takes them again (each heartbeat tries, every 5 s; the run's end
waits up to ``NBORCH_STORE_WAIT``). So the states finally recorded are the true ones, not
the ``crashed`` a stale record would become. A store that cannot record at all (read-only,
corrupt) raises, and the engine stops the run: nothing runs on unrecorded.
"""

from __future__ import annotations

import logging
import os
import time

from ..core.clock import parse_duration
from ..core.errors import SpecError, StoreError, StoreWriteFailed
from ..core.events import AttemptProgress, RunEnded, RunStarted, TaskStateChanged

log = logging.getLogger("nborch")
STORE_WAIT_SECONDS = 300.0  # how long a run's end waits for a store that fails to write


def store_wait() -> float:
    """``NBORCH_STORE_WAIT`` (a duration: ``90s``, ``10m``), else five minutes."""
    text = os.environ.get("NBORCH_STORE_WAIT")
    if not text:
        return STORE_WAIT_SECONDS
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise SpecError(f"NBORCH_STORE_WAIT: {exc}") from None


class Recorder:
    """Records one run's events in its ``Store`` (given, not imported: the engine's)."""

    def __init__(self, store, run_id: str):
        self.store, self.run_id = store, run_id
        self.pending: list = []  # events not recorded yet, oldest first
        self.failure: StoreError | None = None  # why they are not
        self.fatal = False  # the store cannot record at all: nothing more is tried
        self.late = 0  # events recorded after a failed write
        self.resumes: int | None = None  # this engine's turn at the run (see Store.record)

    def __call__(self, event) -> None:
        if self.pending and isinstance(event, AttemptProgress):
            return  # a moment's progress, cleared by the task's next state anyway
        if isinstance(event, RunStarted):
            self.resumes = event.resumes
        self.pending.append(event)
        if not self.fatal:
            self._flush()

    def beat(self) -> None:
        """The run's heartbeat; first, another try at what is not recorded yet."""
        if self.fatal or (self.pending and not self._flush()):
            return
        self._try(lambda: self.store.heartbeat(self.run_id))

    def finish(self, limit: float) -> None:
        """At the run's end: try for up to ``limit`` seconds to record what is left."""
        deadline, delay = time.monotonic() + limit, 0.25
        if self.pending and not self.fatal:
            log.warning("nborch: waiting up to %gs for the run store %s to record the end of "
                        "run %s (%s)", limit, self.store.path, self.run_id,
                        _cause(self.failure))
        while self.pending and not self.fatal and not self._flush():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)

    def unrecorded(self) -> str | None:
        """What the store does not hold, in a sentence (None: everything is recorded)."""
        if not self.pending:
            return None
        ends = [e for e in self.pending if isinstance(e, RunEnded)]
        tasks = {}
        for e in self.pending:
            if isinstance(e, TaskStateChanged):
                tasks[e.task] = e.state
        what = ", ".join(f"{task} {state}" for task, state in sorted(tasks.items()))
        return (f"the run store {self.store.path} could not record {len(self.pending)} "
                f"change(s) of run {self.run_id} ({_cause(self.failure)}): "
                + (f"tasks {what}; " if what else "")
                + (f"the run {ends[-1].status}; " if ends else "")
                + "the store still shows what came before (a run left 'running' there is "
                  "taken for crashed by the next run)")

    def _flush(self) -> bool:
        if not self._try(lambda: self.store.record(self.pending, self.resumes)):
            return False
        if self.failure is not None:
            self.late += len(self.pending)
            log.warning("nborch: the run store %s records again: %d change(s) of run %s "
                        "recorded late", self.store.path, len(self.pending), self.run_id)
            self.failure = None
        self.pending = []
        return True

    def _try(self, write) -> bool:
        try:
            write()
        except StoreWriteFailed as exc:
            if not exc.transient:
                self.fatal, self.failure = True, exc
                raise
            self._failed(exc)
            return False
        except StoreError as exc:  # it could not be opened again
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: StoreError) -> None:
        if self.failure is None:
            log.warning("nborch: %s; run %s goes on, its changes kept in memory until the "
                        "store takes them", exc, self.run_id)
        self.failure = exc


def _cause(failure: StoreError | None) -> str:
    return getattr(failure, "cause", None) or str(failure)
