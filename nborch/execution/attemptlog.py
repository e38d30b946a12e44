"""An attempt's log file: the task's stdout and stderr, masked, written as they come and
streamed as output events; a line marks each attempt's start and end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..core import private
from ..core.events import AttemptOutput
from ..core.secrecy import Masker, StreamMasker


class LogSinks:
    """An attempt's log file, open for the attempt: ``sinks["stdout"]`` and
    ``sinks["stderr"]`` write masked text to it and stream it as output events. ``job``: the
    attempt's ``AttemptJob``."""

    def __init__(self, job: Any, masker: Masker, emit: Callable[[Any], None],
                 started: str):
        self.job, self.emit, self.started = job, emit, started
        self.lock = threading.Lock()
        self.handle = None
        self._sinks = {s: _LogSink(self, s, masker.stream()) for s in ("stdout", "stderr")}

    def __enter__(self) -> LogSinks:
        self.handle = open(self.job.log_path, "a", encoding="utf-8", opener=private.opener)
        self.handle.write(f"--- attempt {self.job.attempt} started {self.started} ---\n")
        self.handle.flush()
        return self

    def __getitem__(self, stream: str) -> _LogSink:
        return self._sinks[stream]

    def close(self, ended: str, error: dict | None, why: str | None = None) -> None:
        """The end line: ok, or the error's type and ``why`` (when nothing else may say it)."""
        for sink in self._sinks.values():
            sink.drain()
        outcome = "ok" if error is None else error["type"] + (f" ({why})" if why else "")
        with self.lock:
            self.handle.write(f"--- attempt {self.job.attempt} ended {ended}: {outcome} ---\n")

    def __exit__(self, *exc_info) -> None:
        with self.lock:
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
        if not text or log.handle is None or log.handle.closed:  # stderr can trail the end
            return
        log.handle.write(text)
        log.handle.flush()
        job = log.job
        log.emit(AttemptOutput(job.run_id, job.task, job.attempt, self.stream, text))

    def flush(self) -> None:
        pass
