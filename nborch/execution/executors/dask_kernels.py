"""A Dask worker's kernels: a kernel template for as long as the worker lives, and warm
kernels for the next attempts. Made by nborch's worker plugin (``dask_wire.worker_plugin``)
as the worker starts, or as the first run connects.

An attempt's kernel is forked from the worker's template when its kernelspec allows it there
(``forkplan``: the worker's own Python and kernelspecs), else started the usual way. Once a
forked kernel is up, a spare of the same kind (``KernelRequest.same_kind``: the same run,
kernel, folder, environment and secrets; only the variables naming the attempt differ) is
forked in the background, and the next such attempt on this worker takes it. Spares are
bounded by the worker's threads, stopped after ``IDLE_SECONDS`` unused, when their run ends
(``drop_run``) and with the plugin. The template exits with the worker (it reads its stdin,
a pipe from the worker: a worker killed with SIGKILL closes it too), and a forked kernel
exits with its template.
"""

from __future__ import annotations

import itertools
import logging
import threading

from ..forking import KernelForker
from ..kernels import KernelRequest
from .kernel_slot import KernelSlot, import_runner

log = logging.getLogger("nborch")
PLUGIN_NAME = "nborch-kernels"  # the worker plugin that keeps a WorkerKernels (dask_wire)
IDLE_SECONDS = 60.0  # a spare nobody took for this long is stopped
DEFAULT_KERNEL = "python3"  # whose template is started with the worker


class WorkerKernels:
    """The kernels of one Dask worker (``limit``: its threads, the spares it keeps at
    most; ``where``: " on <its address>" for messages)."""

    def __init__(self, limit: int, where: str):
        self.limit = max(1, limit)
        self.where = where
        self.forker = KernelForker()
        self.taken = 0  # spares handed to attempts
        self._spares: list[KernelSlot] = []
        self._lock = threading.Lock()
        self._closed = False
        self._numbers = itertools.count(1)
        self._prepared = threading.Event()
        threading.Thread(target=self._prepare, name="nborch-worker-prepare",
                         daemon=True).start()

    def _prepare(self) -> None:
        """Start the usual kernel's template and import what an attempt needs now, before
        the first attempt needs them (attempts wait: jupyter_client is not safe to import
        in two threads at once)."""
        try:
            self.forker.prepare_kernel(DEFAULT_KERNEL)
            import jupyter_client.manager  # noqa: F401
            import_runner()
        except Exception:  # the first attempt says what is wrong
            log.debug("preparing the worker's kernels failed", exc_info=True)
        finally:
            self._prepared.set()

    def slot(self, key: tuple, request: KernelRequest | None) -> KernelSlot:
        """The slot for an attempt: a warm kernel of its kind, else one started now."""
        self._prepared.wait()
        if request is None:
            return KernelSlot(key, None, where=self.where)
        with self._lock:
            spare = next((s for s in self._spares if s.request.same_kind(request)
                          and not s.failed), None)
            if spare is not None:
                self._spares.remove(spare)
                self.taken += 1
        if spare is not None:
            self._add_spare(request)
            return spare
        return KernelSlot(key, request, self._started, self.forker, self.where)

    def _started(self, slot: KernelSlot) -> None:
        if slot.kernel.forked and not slot.failed:  # cheap to start: keep one ready
            self._add_spare(slot.request)

    def _add_spare(self, request: KernelRequest) -> None:
        with self._lock:
            if self._closed:
                return
            spare = KernelSlot(("spare", next(self._numbers)), request, forker=self.forker,
                               where=self.where)
            self._spares.append(spare)
            excess, self._spares = self._spares[:-self.limit], self._spares[-self.limit:]
        for old in excess:
            old.discard()
        timer = threading.Timer(IDLE_SECONDS, self._expire, (spare,))
        timer.daemon = True
        timer.start()

    def _expire(self, spare: KernelSlot) -> None:
        self._drop(lambda s: s is spare)

    def drop_run(self, run_id: str) -> None:
        """Stop the spares of a run that ended (they hold its environment, secrets too)."""
        self._drop(lambda s: s.request.env.get("NBORCH_RUN_ID") == run_id)

    def _drop(self, which) -> None:
        with self._lock:
            dropped = [s for s in self._spares if which(s)]
            self._spares = [s for s in self._spares if not which(s)]
        for spare in dropped:
            spare.discard()

    def spares(self) -> int:
        with self._lock:
            return len(self._spares)

    def close(self) -> None:
        """Stop the spares and the templates (kernels forked from them exit with them)."""
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        for spare in spares:
            spare.discard()
        self.forker.close(now=True)
