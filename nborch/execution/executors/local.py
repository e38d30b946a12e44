"""Run attempts in threads of this process; kernels are child processes.

Each attempt has a thread of its own that starts the attempt's kernel and runs the
attempt on it. The thread can be started ahead of need (``prewarm``): the kernel is then
ready when the task's upstream tasks finish, and the task starts executing cells at once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from ..attempt import AttemptJob, AttemptResult
from ..kernels import KernelRequest
from .base import Executor
from .kernel_slot import KernelSlot

log = logging.getLogger("nborch")


class LocalExecutor(Executor):
    name = "local"
    prewarms = True

    def __init__(self, fork_kernels: bool | None = None):
        self._slots: dict[tuple, KernelSlot] = {}  # (task, attempt) -> slot
        self._finishing: list[KernelSlot] = []  # attempts done, kernels shutting down
        self._lock = threading.Lock()
        self._not_forked = "turned off"  # why kernels are not forked, when they are not
        if fork_kernels is None:
            fork_kernels = os.environ.get("NBORCH_FORK_KERNELS", "1") != "0"
            self._not_forked = "turned off by NBORCH_FORK_KERNELS=0"
        self._fork_kernels = fork_kernels
        self._forker = None  # kernel templates, made with the first kernel (see forkserver.py)
        self._kernel_names: set[str] = set()

    @property
    def forks_kernels(self) -> bool:
        """Whether kernels are forked from a template (cheap to start; see forkserver.py)."""
        return self._fork_kernels

    def _new_slot(self, key: tuple, request: KernelRequest | None) -> KernelSlot:
        """A slot for ``key`` (call with the lock held)."""
        if request is not None and request.name not in self._kernel_names:
            self._kernel_names.add(request.name)
            if not self._fork_kernels:
                log.info("kernels %r: started the usual way, not forked: forking %s",
                         request.name, self._not_forked)
            else:
                if self._forker is None:
                    from ..forking import KernelForker, take_early
                    self._forker = take_early() or KernelForker()
                self._forker.prepare_kernel(request.name)  # its template starts now
        return KernelSlot(key, request, self._ready, self._forker)

    def submit(self, job: AttemptJob, request: KernelRequest | None, emit: Callable,
               done: Callable[[AttemptResult], None]) -> KernelSlot:
        """Run ``job``; ``done(result)`` is called from the attempt's thread. Uses the kernel
        warmed for it when it matches ``request`` (None: a command, no kernel). Returns a
        handle with ``cancel()``."""
        key = (job.task, job.attempt)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or slot.claimed or request is None or \
                    not slot.request.same_as(request):
                if slot is not None:
                    slot.discard()
                slot = self._slots[key] = self._new_slot(key, request)
        slot.run(job, emit, done)
        return slot

    def prewarm(self, task: str, attempt: int, request: KernelRequest) -> None:
        """Start the kernel of a task that will soon be ready."""
        with self._lock:
            if (task, attempt) not in self._slots:
                self._slots[(task, attempt)] = self._new_slot((task, attempt), request)

    def warm(self) -> set[str]:
        """Tasks with a kernel started or starting for them, not yet given their job."""
        with self._lock:
            return {slot.key[0] for slot in self._slots.values() if not slot.claimed}

    def starting(self) -> tuple[int, int]:
        """Kernels still starting: (for attempts waiting on them, spares started ahead)."""
        with self._lock:
            unready = [slot for slot in self._slots.values() if not slot.ready.is_set()]
        claimed = sum(1 for slot in unready if slot.claimed)
        return claimed, len(unready) - claimed

    def discard(self, task: str) -> None:
        """Stop kernels warmed for a task that will not run after all (``shutdown`` still
        waits for them to be gone)."""
        with self._lock:
            for key in [k for k, slot in self._slots.items() if k[0] == task and not slot.claimed]:
                slot = self._slots.pop(key)
                slot.discard()
                self._finish(slot)

    def _ready(self, slot: KernelSlot) -> None:
        self.on_kernel_ready()

    def release(self, task: str, attempt: int) -> None:
        """The attempt is over: its slot shuts its kernel down by itself."""
        with self._lock:
            slot = self._slots.pop((task, attempt), None)
            if slot is not None:
                self._finish(slot)

    def _finish(self, slot: KernelSlot) -> None:
        """Keep ``slot`` until its kernel is gone, for ``shutdown`` to wait for; forget
        those whose thread has ended (call with the lock held). Kept for the whole run,
        finished slots held every attempt's notebook: 468 MB at 10,000 tasks."""
        self._finishing = [s for s in self._finishing if s.thread.is_alive()]
        self._finishing.append(slot)

    def shutdown(self, timeout: float = 15.0) -> None:
        """Stop unused warm kernels and wait until every kernel of the run is gone."""
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
            finishing, self._finishing = self._finishing, []
        for slot in slots:
            if not slot.claimed:
                slot.discard()
        for slot in slots + finishing:
            slot.thread.join(timeout)
        if self._forker is not None:
            self._forker.close()
            self._forker = None
