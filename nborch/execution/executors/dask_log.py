"""The logs of attempts on Dask workers that do not see the run's folder, written by the
orchestrator (a worker that sees it writes the log itself, as the local executor does).

Such a worker masks the attempt's output and sends it as events, which the orchestrator
appends to the task's log as they come, between the attempt's start line (when it left
Dask's queue) and its end line (from its result). The worker says ``RELAYED`` before the
attempt starts. Its events and its result travel apart, so the result may come before the
last output: the worker sends ``DRAINED`` after all of it, and the end line waits for that
(at most ``DRAIN_WAIT`` seconds). Output that comes after the end line (a cancelled
attempt's last words) is dropped. An attempt whose run gave it up because the orchestrator
died or lost the cluster ends its log without an end line: nobody is there to write it.

Every method but ``add`` runs on the executor's event thread, in the order things arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from ...core import private
from ..attempt import AttemptJob, AttemptResult
from ..attemptlog import end_line, start_line

RELAYED = "AttemptLogRelayed"  # the worker's word that the log is ours (by Dask key)
DRAINED = "AttemptDrained"  # its last message of such an attempt
DRAIN_WAIT = 10.0  # seconds the end line waits for the rest of the output


@dataclass
class _Log:
    path: str
    task: str
    attempt: int
    relayed: bool = False  # the worker writes no log
    handle: IO[str] | None = None  # open once the attempt started on such a worker
    drained: bool = False
    pending: Callable[[], None] | None = None  # the end, once drained


class RelayedLogs:
    """``post(fn)`` runs ``fn`` on the event thread (for the drain deadline)."""

    def __init__(self, post: Callable[[Callable[[], None]], None]):
        self.post = post
        self._logs: dict[str, _Log] = {}  # by the attempt's Dask key
        self._keys: dict[tuple, str] = {}  # (task, attempt) -> key

    def add(self, key: str, job: AttemptJob) -> None:
        """Before the attempt is submitted (from the submitting thread)."""
        self._keys[(job.task, job.attempt)] = key
        self._logs[key] = _Log(job.log_path, job.task, job.attempt)

    def _log(self, task: str, attempt: int) -> _Log | None:
        return self._logs.get(self._keys.get((task, attempt), ""))

    def relayed(self, key: str, drained: bool) -> None:
        """The worker said ``RELAYED``, or ``drained``: ``DRAINED``."""
        if (log := self._logs.get(key)) is None:
            return
        log.relayed = True
        if drained:
            log.drained = True
            if log.pending is not None:
                log.pending()

    def started(self, task: str, attempt: int, at: str) -> None:
        """A start line each time it starts (Dask runs it again when its worker died)."""
        if (log := self._log(task, attempt)) is None or not log.relayed:
            return
        if log.handle is None:
            log.handle = open(log.path, "a", encoding="utf-8", opener=private.opener)
        self._write(log, start_line(attempt, at))

    def output(self, task: str, attempt: int, text: str) -> None:
        if (log := self._log(task, attempt)) is not None and log.handle is not None:
            self._write(log, text)

    def end(self, key: str, result: AttemptResult, deliver: Callable[[], None]) -> None:
        """Write the end line, then ``deliver`` the result; for the result of a worker that
        relayed the log, once its output is all in."""
        log = self._logs.get(key)
        if log is None or log.drained or not result.relayed_log:
            self._end(key, log, result)
            deliver()
            return

        def finish() -> None:
            if log.pending is not None:  # once: on DRAINED or at the deadline
                log.pending = None
                self._end(key, log, result)
                deliver()
        log.pending = finish
        timer = threading.Timer(DRAIN_WAIT, self.post, (finish,))
        timer.daemon = True
        timer.start()

    def _end(self, key: str, log: _Log | None, result: AttemptResult) -> None:
        self._logs.pop(key, None)
        if log is None:
            return
        if self._keys.get((log.task, log.attempt)) == key:
            del self._keys[(log.task, log.attempt)]
        if log.handle is None:  # it never left Dask's queue: no log
            return
        if result.artifacts:
            self._write(log, f"--- attempt {log.attempt}: artifacts copied to "
                             f"{result.artifacts} ---\n")
        self._write(log, end_line(log.attempt, result.ended_at, result.error))
        log.handle.close()

    def close(self) -> None:
        """The run ended: close the logs of attempts that never ended."""
        for log in list(self._logs.values()):
            if log.handle is not None:
                log.handle.close()
        self._logs.clear()

    @staticmethod
    def _write(log: _Log, text: str) -> None:
        assert log.handle is not None
        log.handle.write(text)
        log.handle.flush()  # for `nborch logs --follow`
