"""One run's side of pools: the slots its tasks hold in the store, the tasks waiting for
one, and when to ask a full pool again (another process frees slots without telling us,
so a full pool is polled, at most every ``POLL_SECONDS`` and only while a task waits)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ..core.errors import StoreError
from ..core.pools import waiting_reason
from ..core.states import State
from ..store.store import Store

log = logging.getLogger("nborch")
POLL_SECONDS = 0.5


class PoolSlots:
    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self.held: dict[str, str] = {}     # task -> the pool whose slot it holds
        self.waiting: dict[str, str] = {}  # task -> the pool it waits for
        self._missing: set[str] = set()    # pools removed from the store since validation
        self._ask_at: dict[str, float] = {}  # full pool -> when to ask it again (monotonic)
        self._taken_any = False

    def take(self, pool: str, task: str) -> bool:
        """Take a slot of ``pool`` for ``task``'s attempt; False when it must wait."""
        now = time.monotonic()
        if now < self._ask_at.get(pool, 0.0):
            self.waiting[task] = pool
            return False
        try:
            taken = self.store.acquire_slot(pool, self.run_id, task)
        except StoreError as exc:  # busy for too long, or full: asked again at the next poll
            log.warning("run %s: cannot take a slot of pool %r: %s", self.run_id, pool, exc)
            taken = False
        if taken:
            self.held[task], self._taken_any = pool, True
            self.waiting.pop(task, None)
            self._missing.discard(pool)
            return True
        if taken is None:
            self._missing.add(pool)
        self.waiting[task] = pool
        self._ask_at[pool] = now + POLL_SECONDS
        return False

    def reason(self, task: str) -> str:
        """Why a waiting task waits, as its record says."""
        pool = self.waiting[task]
        if pool in self._missing:
            return (f"pool {pool!r} was removed from the store; set it again (`nborch pool "
                    f"set {pool} --slots N`) or cancel the run")
        return waiting_reason(pool)

    def next_poll(self, states: Mapping[str, str]) -> float | None:
        """When to ask a full pool again (monotonic), if a queued task waits for one.
        A time already past is no reason to wake: that pool was not asked because the run
        had no free slot of its own, and a task's end wakes the engine."""
        if not self.waiting:
            return None
        self.waiting = {t: p for t, p in self.waiting.items() if states[t] == State.QUEUED}
        now = time.monotonic()
        due = [self._ask_at[p] for p in set(self.waiting.values())
               if self._ask_at.get(p, 0.0) > now]
        return min(due, default=None)

    def release(self, task: str) -> None:
        """Free the slot ``task``'s ended attempt held; this run's waiting tasks of that
        pool may ask at once."""
        pool = self.held.pop(task, None)
        if pool is None:
            return
        self._ask_at.pop(pool, None)
        try:
            self.store.release_slot(self.run_id, task)
        except StoreError as exc:  # freed at the run's end, or by the next taker once it ends
            log.warning("run %s: cannot free %r's slot of pool %r: %s", self.run_id, task,
                        pool, exc)

    def release_all(self) -> None:
        """At the run's end: free whatever slot is still held."""
        if not self._taken_any:
            return
        self.held.clear()
        try:
            self.store.release_slots(self.run_id)
        except StoreError as exc:
            log.warning("run %s: cannot free its pool slots: %s", self.run_id, exc)
