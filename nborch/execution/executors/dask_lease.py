"""The lease a run holds on its attempts on a Dask cluster, so that none outlives the run.

The orchestrating process renews a ``distributed.Variable`` (a counter) every
``RENEW_SECONDS``; each attempt's watcher on a worker reads it and gives the attempt up
(its kernel stopped, nothing written but the log's last line) once the counter has not
moved for ``EXPIRY_SECONDS`` of the worker's own clock (clocks of hosts need not agree):
the orchestrator is stopped, hung or cut off. An orchestrator that dies outright, and a
scheduler that goes away, are noticed sooner, from the worker's own state (see
``dask_worker``).
"""

from __future__ import annotations

import threading
import time

RENEW_SECONDS = 2.0
EXPIRY_SECONDS = 20.0  # ten renewals missed: a busy orchestrator is not taken for gone


def lease_name(topic: str) -> str:
    """The lease of the run whose events go to ``topic``."""
    return f"{topic}-lease"


class Lease:
    """The orchestrator's side: renews the lease until ``end()`` deletes it."""

    def __init__(self, client, name: str):
        import distributed
        self.name = name
        self._variable = distributed.Variable(name, client=client)
        self._variable.set(0)
        self._ended = threading.Event()
        threading.Thread(target=self._renew, name="nborch-dask-lease", daemon=True).start()

    def _renew(self) -> None:
        count = 0
        while not self._ended.wait(RENEW_SECONDS):
            count += 1
            try:
                self._variable.set(count)
            except Exception:  # the scheduler is gone: the run learns it from its attempts
                pass

    def end(self) -> None:
        self._ended.set()
        try:
            self._variable.delete()
        except Exception:  # the connection is already gone
            pass


class LeaseWatch:
    """A worker's side, for one attempt: ``lapsed()`` is True once the lease stopped moving."""

    def __init__(self, client, name: str):
        import distributed
        self._variable = distributed.Variable(name, client=client)
        self._seen: object = None
        self._since = self._next_look = time.monotonic()

    def lapsed(self) -> bool:
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + RENEW_SECONDS
            try:
                value = self._variable.get(timeout=RENEW_SECONDS)
            except Exception:  # deleted, or the scheduler does not answer: no renewal seen
                value = self._seen
            if value != self._seen:
                self._seen, self._since = value, now
        return now - self._since > EXPIRY_SECONDS
