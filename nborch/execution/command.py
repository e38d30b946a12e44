"""One attempt of a command task: a program run without a shell, its output the task's log.

The program runs in a process group of its own, so a timeout or a cancel stops everything
it started. ``nborch publish NAME VALUE`` (or ``nborch.publish`` in a Python script) inside
it appends to the file named by ``NBORCH_VALUES_FILE``; those are the task's values.
Secrets reach the program in its environment and are masked in its log and error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from ..core.clock import utcnow
from ..core.errors import error_dict
from ..core.private import FILE_MODE
from ..core.secrecy import Masker, search_path, task_environment
from ..core.states import State
from .attempt import AttemptJob, AttemptResult, make_product_dirs
from .attemptlog import ABANDONED, LogSinks
from .limits import OutputLimit, ValueTooLarge, json_size, max_output, max_value

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a command's process group
DRAIN_GRACE = 1.0  # seconds to wait for output after the program exits (background children)
VALUES_ENV = "NBORCH_VALUES_FILE"
LINE_PIECE = 64 * 1024  # bytes of output read at once, at most


class CommandRunner:
    """Runs ``job.command``; same interface as ``AttemptRunner`` (``run``, ``cancel``)."""

    def __init__(self, job: AttemptJob, emit: Callable[[Any], None] = lambda event: None):
        self.job = job
        self.emit = emit
        self.masker = Masker(job.secret_values)
        self.process: subprocess.Popen | None = None
        self._stop_reason: str | None = None  # "cancel" | "timeout" | "abandon"
        self._abandoned: dict | None = None  # why the run gave the attempt up
        self._lock = threading.Lock()
        self._last_stderr = ""

    # -- control, from any thread -----------------------------------------------------

    def cancel(self) -> None:
        self._stop("cancel")

    def abandon(self, reason: str) -> None:
        """The run gave this attempt up (see ``AttemptRunner.abandon``)."""
        self._abandoned = error_dict(ABANDONED, reason)
        self._stop("abandon")

    def _stop(self, reason: str) -> None:
        with self._lock:
            if self._stop_reason or self.process is None or self.process.returncode is not None:
                self._stop_reason = self._stop_reason or reason
                return
            self._stop_reason = reason
        self._signal_group(signal.SIGTERM)
        timer = threading.Timer(STOP_GRACE, self._signal_group, (signal.SIGKILL,))
        timer.daemon = True
        timer.start()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the whole group is gone already

    # -- the attempt ------------------------------------------------------------------

    def run(self) -> AttemptResult:
        job = self.job
        make_product_dirs(job)
        # In a private folder (the run's): the values are not masked yet, and a killed nborch
        # must not leave them where other users can read them (/tmp).
        values_file = os.path.join(job.private_folder(),
                                   f"{job.task}.attempt-{job.attempt}.values.jsonl")
        os.close(os.open(values_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))
        env = task_environment({**job.env, VALUES_ENV: values_file}, job.withheld_env)
        env["PATH"] = search_path(env)
        started = utcnow()
        with LogSinks(job, self.masker, self.emit, started) as sinks:
            limit = OutputLimit(max_output(job.env), sinks["stderr"])
            try:
                error = self._execute(env, {s: limit.wrap(sinks[s]) for s in ("stdout", "stderr")})
            except OSError as exc:  # not found, not executable, bad cwd
                error = error_dict("CommandNotStarted", f"{job.command[0]}: {exc.strerror or exc}")
            limit.finish()
            ended = utcnow()
            sinks.close(ended, error)
        try:
            values = self.masker.data(_read_values(values_file, max_value(job.env)))
        except ValueTooLarge as exc:  # `nborch publish` checks; this catches a bypass
            values, error = {}, error or error_dict("ValueTooLarge", str(exc))
        os.unlink(values_file)
        status = State.SUCCESS if error is None else (
            State.CANCELLED if self._stop_reason == "cancel" else State.FAILED)
        return AttemptResult(status, started, ended, None, values, self.masker.data(error))

    def _execute(self, env: dict, sinks: dict) -> dict | None:
        job = self.job
        with self._lock:
            if self._stop_reason in ("cancel", "abandon"):
                return self._abandoned or error_dict("Cancelled", "the run was cancelled")
            self.process = subprocess.Popen(
                list(job.command), cwd=job.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        readers = [threading.Thread(target=self._pump, args=(pipe, sinks[stream], stream),
                                    daemon=True)
                   for pipe, stream in ((self.process.stdout, "stdout"),
                                        (self.process.stderr, "stderr"))]
        for reader in readers:
            reader.start()
        try:
            code = self.process.wait(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            self._stop("timeout")
            code = self.process.wait()
        for reader in readers:
            reader.join(DRAIN_GRACE)
        if any(reader.is_alive() for reader in readers):
            # A child left running in the background still holds the output open.
            self._signal_group(signal.SIGKILL)
            for reader in readers:
                reader.join()
        return self._error(code)

    def _pump(self, pipe, sink, stream: str) -> None:
        with pipe:
            # In pieces: a program writing gigabytes without a newline stays in bounds.
            line_start = True
            for raw in iter(lambda: pipe.readline(LINE_PIECE), b""):
                line = raw.decode("utf-8", errors="replace")
                # Only a line's first piece: a later one may begin inside a secret, whose
                # end the masker would not know.
                if stream == "stderr" and line_start and line.strip():
                    self._last_stderr = line.strip()
                line_start = raw.endswith(b"\n")
                sink.write(line)

    def _error(self, code: int) -> dict | None:
        program = self.job.command[0]
        if self._stop_reason == "timeout":
            return error_dict("TimeoutError", f"{program} stopped after its timeout of "
                              f"{self.job.timeout:g}s")
        if self._stop_reason in ("cancel", "abandon"):
            return self._abandoned or error_dict("Cancelled", "the run was cancelled")
        if code == 0:
            return None
        if code < 0:
            message = f"{program} was killed by {signal.Signals(-code).name}"
        else:
            message = f"{program} exited with code {code}"
        if self._last_stderr:  # masked before it is shortened, so no part of a secret stays
            message += f"; its last error output: {self.masker.text(self._last_stderr)[:300]}"
        return error_dict("CommandFailed", message)


_LINE_START = re.compile(rb'\{"name": ("(?:[^"\\]|\\.)*"), "value": ')


def _read_values(path: str, limit: int) -> dict:
    """The values a command published (one JSON line each); one over ``limit`` bytes raises
    ``ValueTooLarge``. A line is read up to a bound, so a huge one never is in memory."""
    values = {}
    bound = limit + 4096  # the value and its line's framing, a long name included
    with open(path, "rb") as handle:
        while line := handle.readline(bound):
            if len(line) == bound and not line.endswith(b"\n"):
                size = len(line) + _skip_line(handle)
                start = _LINE_START.match(line)
                name = json.loads(start.group(1)) if start else "?"
                raise ValueTooLarge(name, size - (start.end() + 2 if start else 0), limit)
            try:
                item = json.loads(line)
                name, value = item["name"], item["value"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from a killed program
            if (size := json_size(value)) > limit:
                raise ValueTooLarge(name, size, limit)
            values[name] = value
    return values


def _skip_line(handle) -> int:
    """Read past the rest of the current line; its length in bytes."""
    skipped = 0
    while chunk := handle.readline(1 << 20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped
