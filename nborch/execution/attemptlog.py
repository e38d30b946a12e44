"""An attempt's log file: the task's stdout and stderr, masked, written as they come and
streamed as output events; a line marks each attempt's start and end.

On a Dask worker that does not see the run's folder the attempt writes no file
(``AttemptJob.relayed_log``): its masked output goes only as events, and the orchestrator
writes the log from them (``dask_log``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..core import private
from ..core.events import AttemptOutput
from ..core.secrecy import Masker, StreamMasker

ABANDONED = "AttemptAbandoned"  # the error of an attempt its run gave up (its log says why)


def start_line(attempt: int, started: str) -> str:
    return f"--- attempt {attempt} started {started} ---\n"


def end_line(attempt: int, ended: str, error: dict | None) -> str:
    """The last line of an attempt: ok, or the error's type; with the reason for an attempt
    its run gave up, which nothing else may say (its result may reach nobody)."""
    outcome = "ok" if error is None else error["type"] + (
        f" ({error['message']})" if error["type"] == ABANDONED else "")
    return f"--- attempt {attempt} ended {ended}: {outcome} ---\n"


class LogSinks:
    """An attempt's log file, open for the attempt: ``sinks["stdout"]`` and
    ``sinks["stderr"]`` write masked text to it and stream it as output events. ``job``: the
    attempt's ``AttemptJob``."""

    def __init__(self, job: Any, masker: Masker, emit: Callable[[Any], None],
                 started: str):
        self.job, self.emit, self.started = job, emit, started
        self.lock = threading.Lock()
        self.handle = None
        self.open = False  # output after the end line (stderr can trail it) is dropped
        self._sinks = {s: _LogSink(self, s, masker.stream()) for s in ("stdout", "stderr")}

    def __enter__(self) -> LogSinks:
        if not self.job.relayed_log:
            self.handle = open(self.job.log_path, "a", encoding="utf-8", opener=private.opener)
            self.handle.write(start_line(self.job.attempt, self.started))
            self.handle.flush()
        self.open = True
        return self

    def __getitem__(self, stream: str) -> _LogSink:
        return self._sinks[stream]

    def close(self, ended: str, error: dict | None) -> None:
        """Flush what the maskers held back, then the end line."""
        for sink in self._sinks.values():
            sink.drain()
        with self.lock:
            if self.handle is not None:
                self.handle.write(end_line(self.job.attempt, ended, error))

    def __exit__(self, *exc_info) -> None:
        with self.lock:
            self.open = False
            if self.handle is not None:
                self.handle.close()


class _LogSink:
    """One stream of the log. papermill writes a notebook's stream outputs here. A secret
    split between two writes is masked whole: the end of a write that could begin one
    waits for the next write (or the end of the attempt)."""

    def __init__(self, log: LogSinks, stream: str, masker: StreamMasker):
        self.log, self.stream, self.masker = log, stream, masker

    def write(self, text: str) -> None:
        if text:
            with self.log.lock:
                self._write(self.masker.feed(text))

    def drain(self) -> None:
        with self.log.lock:
            self._write(self.masker.flush())

    def _write(self, text: str) -> None:  # with the log's lock held
        log = self.log
        if not text or not log.open:
            return
        if log.handle is not None:
            log.handle.write(text)
            log.handle.flush()
        job = log.job
        log.emit(AttemptOutput(job.run_id, job.task, job.attempt, self.stream, text))

    def flush(self) -> None:
        pass
