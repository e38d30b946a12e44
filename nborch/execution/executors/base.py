"""What the engine asks of an executor: the contract every executor implements.

An executor runs attempts somewhere (threads here, a Dask cluster) and reports back through
two callbacks, so the engine never waits on it: ``emit(event)`` for what happens during an
attempt (kernel started, output, progress) and ``done(AttemptResult)`` once at its end.
Running kernels ahead of need is optional: an executor that cannot keeps the defaults.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..attempt import AttemptJob, AttemptResult
from ..kernels import KernelRequest


class AttemptHandle(Protocol):
    def cancel(self) -> None:
        """Stop the attempt; it still calls ``done`` (with a cancelled result)."""


class Executor(ABC):
    """Subclass this, and register the subclass under a name (see ``executors.get_executor``)."""

    # A callable the engine sets: call it when a kernel started ahead of need is ready.
    on_kernel_ready: Callable[[], None] = staticmethod(lambda: None)
    # True when a submitted attempt may wait in a queue (a cluster's) before it starts: the
    # task then stays ``queued`` until the executor calls ``on_attempt_started(task=,
    # attempt=, at=)`` (set by the engine; ``at`` an ISO time). Else it runs once submitted.
    queues = False
    on_attempt_started: Callable[..., None] = staticmethod(lambda **started: None)

    @classmethod
    def from_target(cls, target: str) -> Executor:
        """The executor ``--executor TARGET`` names (``dask://host:8786``: its scheme picks
        the class, the whole target is its argument)."""
        return cls()

    @abstractmethod
    def submit(self, job: AttemptJob, request: KernelRequest | None,
               emit: Callable[[Any], None], done: Callable[[AttemptResult], None]
               ) -> AttemptHandle:
        """Start the attempt (with a fresh kernel for ``request``; None for a command) and
        return at once."""

    def parallelism(self) -> int:
        """How many attempts it runs at once: the default of ``--max-parallel`` (more would
        only wait in its queue, and count against the limit while they wait). Read again
        during a run, every few seconds at most (``runtime.slots``)."""
        return os.cpu_count() or 1

    def capacity(self, resources: Mapping[str, float]) -> int | None:
        """How many attempts needing ``resources`` (``{}``: none) it can run at once now, or
        None when it has no limit of its own (``--max-parallel`` alone bounds them). The
        engine keeps no more of them in flight (``runtime.slots``), so attempts that wait
        in the executor's queue for a resource do not hold back the others. Read again
        during a run, every few seconds at most."""
        return None

    def release(self, task: str, attempt: int) -> None:  # noqa: B027
        """The engine has the attempt's result: free what the executor kept for it."""

    def shutdown(self) -> None:  # noqa: B027
        """The run ended: stop every kernel and worker the executor started."""

    # -- kernels started ahead of need (optional) -----------------------------------------

    prewarms = False  # True when the methods below start kernels
    forks_kernels = False  # kernels are cheap to start (forked), so start spares eagerly

    def prewarm(self, task: str, attempt: int, request: KernelRequest) -> None:  # noqa: B027
        """Start the kernel of an attempt that will be submitted soon."""

    def warm(self) -> set[str]:
        """Tasks whose early kernel is started or starting."""
        return set()

    def starting(self) -> tuple[int, int]:
        """Kernels starting now: (those a submitted attempt waits for, spares)."""
        return 0, 0

    def discard(self, task: str) -> None:  # noqa: B027
        """The task will not run (cancelled, skipped): stop its early kernel."""
