"""A thread holding one kernel for one attempt, shared by the local executor and the Dask
workers: it starts the kernel (possibly before the attempt is known: a warm kernel), waits
for the attempt, runs it, reports, then shuts the kernel down off the critical path.

jupyter_client binds a kernel's client to the event loop of the thread that made it, so the
attempt runs in the slot's thread, whoever hands it over.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable

from ...core.clock import utcnow
from ...core.errors import error_dict
from ...core.states import State
from ..attempt import AttemptJob, AttemptResult
from ..kernels import Kernel, KernelRequest
from ..runners import make_runner

log = logging.getLogger("nborch")


class KernelSlot:
    """One attempt's kernel in a thread of its own. A command task's slot (``request``
    None) has no kernel. ``on_ready(slot)`` is called once its kernel started (or failed
    to); ``where`` ends the message of a kernel that did not start (" on <worker>")."""

    def __init__(self, key: tuple, request: KernelRequest | None,
                 on_ready: Callable[[KernelSlot], None] = lambda slot: None, forker=None,
                 where: str = ""):
        self.key = key
        self.request = request
        self.ready = threading.Event()
        self.kernel = Kernel(request, forker) if request is not None else None
        self.runner = None
        self.claimed = False  # given its job (or discarded)
        self._jobs: queue.Queue = queue.Queue()
        self._on_ready = on_ready
        self._where = where
        self._start_error: Exception | None = None
        self._cancelled = False
        self._abandoned: str | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, name=f"nborch-{key[0]}-{key[1]}",
                                       daemon=True)
        self.thread.start()

    @property
    def failed(self) -> bool:
        """Its kernel could not be started."""
        return self._start_error is not None

    def run(self, job: AttemptJob, emit: Callable, done: Callable[[AttemptResult], None],
            request: KernelRequest | None = None) -> None:
        """Run ``job`` on this slot's kernel; with ``request`` (of the same kind as the
        slot's: a warm kernel), the kernel first takes the attempt's own variables."""
        self.claimed = True
        self._jobs.put((job, emit, done, request))

    def discard(self) -> None:
        self.claimed = True
        self._jobs.put(None)

    def cancel(self) -> None:
        self._cancelled = True
        if self.runner is not None:
            self.runner.cancel()
        elif self.kernel is not None:
            self.kernel.kill()

    def abandon(self, reason: str) -> None:
        """The run gave the attempt up: its runner stops the kernel and writes only the
        log's end line (at once, or as soon as the attempt is handed its runner)."""
        with self._lock:
            self._abandoned = reason
            runner = self.runner
        if runner is not None:
            runner.abandon(reason)

    def _main(self) -> None:
        if self.kernel is not None:
            try:
                self.kernel.start(meanwhile=import_runner)
            except Exception as exc:
                self._start_error = exc
        self.ready.set()
        if self.kernel is not None:
            self._on_ready(self)
        item = self._jobs.get()
        try:
            if item is not None:
                self._attempt(*item)
        finally:
            try:
                if self.kernel is not None:
                    self.kernel.shutdown()
            except Exception:
                log.debug("kernel shutdown failed", exc_info=True)

    def _attempt(self, job: AttemptJob, emit: Callable, done: Callable,
                 request: KernelRequest | None) -> None:
        started = utcnow()
        if self._start_error is None and request is not None and self.kernel is not None \
                and not self._cancelled:
            try:
                self.kernel.adopt(request)
            except Exception as exc:
                self._start_error = exc
        if self._start_error is not None or self._cancelled:
            status = State.CANCELLED if self._cancelled else State.FAILED
            message = "the run was cancelled" if self._cancelled else \
                f"kernel {self.request.name!r} did not start{self._where}: {self._start_error}"
            done(AttemptResult(status, started, utcnow(), None, {},
                               error_dict("KernelStartError", message)))
            return
        try:
            runner = make_runner(job, self.kernel, emit)
            with self._lock:
                self.runner = runner
                abandoned = self._abandoned
            if self._cancelled:
                runner.cancel()
            elif abandoned is not None:
                runner.abandon(abandoned)
            result = runner.run()
        except Exception as exc:  # a bug of ours must still end the attempt
            log.error("attempt %s/%s crashed:\n%s", job.task, job.attempt, traceback.format_exc())
            result = AttemptResult(State.FAILED, started, utcnow(), None, {}, error_dict(
                "NborchInternalError", f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc()))
        done(result)


def import_runner() -> None:
    """Import papermill and the attempt's engine (a third of a second, once per process)
    while the first kernel starts, not after it."""
    from .. import papermill_engine  # noqa: F401
