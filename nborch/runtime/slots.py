"""How many attempts of a run may be in flight (submitted, not ended): the one rule.

- All together, at most ``max_parallel``: ``--max-parallel``, else the executor's
  ``parallelism()`` (locally the CPUs; on Dask the cluster's worker threads).
- Of each resource set (a task's ``resources``; ``{}`` for plain tasks), at most what the
  executor can run of that set at once, ``Executor.capacity`` (on Dask: on each worker that
  offers the set, its threads or the attempts its resources hold, if fewer; locally: no cap
  of its own). A set nothing can run now (capacity 0) still gets one attempt in flight:
  the executor says what becomes of it (Dask: ``ResourceUnavailable`` when no worker
  offers the resources, a plain task waits for the first worker).
- Except plain tasks under a ``--max-parallel`` that was given: those may all be in
  flight, waiting in Dask's queue beyond what the workers run now, since an adaptive
  cluster (``cluster.adapt()``) grows on the work it sees waiting; capped by what runs now,
  it would never grow past the workers it has.

An attempt submitted to Dask may wait in Dask's queue until a worker with its resources is
free, and while it waits it holds its place under ``max_parallel``. The per-set cap keeps
those waits to the attempts the cluster will run as soon as a worker of theirs frees, so
tasks waiting for one resource (the planner does not even offer the queued tasks of a full
set: ``Planner.queued_where``) never hold the slots of tasks that could run now.

The executor's numbers are read again at most every ``REREAD_SECONDS``, at a dispatch, so
workers that join or leave during a run count within seconds; without ``--max-parallel``
the limit follows the cluster too.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping

from ..core.planner import ResourceSet
from ..execution.executors import Executor

REREAD_SECONDS = 2.0


class AttemptSlots:
    def __init__(self, executor: Executor, resource_set: Mapping[str, ResourceSet],
                 max_parallel: int | None):
        self._executor = executor
        self._set_of = resource_set  # task -> its resource set
        self._sets = set(resource_set.values())
        self._given = max_parallel  # --max-parallel; None: the executor's parallelism
        self.limit = 0
        self._caps: dict[ResourceSet, int | None] = {}
        self._in_flight: Counter[ResourceSet] = Counter()
        self.total = 0
        self._read_at = -REREAD_SECONDS
        self.refresh()

    def refresh(self) -> None:
        """Read the executor's numbers again if they are older than ``REREAD_SECONDS``."""
        now = time.monotonic()
        if now - self._read_at < REREAD_SECONDS:
            return
        self._read_at = now
        self.limit = self._given or self._executor.parallelism()
        self._caps = {key: None if self._given and not key else
                      self._executor.capacity(dict(key)) for key in self._sets}

    @property
    def full(self) -> bool:
        return self.total >= self.limit

    def open(self, key: ResourceSet) -> bool:
        """Whether another attempt of resource set ``key`` may start, as far as its cap goes."""
        cap = self._caps.get(key)
        return cap is None or self._in_flight[key] < max(cap, 1)

    def free(self, task: str) -> bool:
        """Whether an attempt of ``task`` may start now."""
        return not self.full and self.open(self._set_of[task])

    def take(self, task: str) -> None:
        self._in_flight[self._set_of[task]] += 1
        self.total += 1

    def give_back(self, task: str) -> None:
        self._in_flight[self._set_of[task]] -= 1
        self.total -= 1
