"""One task attempt: a fresh kernel, the notebook run through papermill, the result saved.

This is the only place that executes a notebook. It emits progress and output events,
enforces the attempt's timeout, stops its kernel on cancel, reads published values, and
masks secret values in everything it writes (executed notebook, log, error, values).
An ``AttemptJob`` holds plain data only, so an attempt can run in another process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nbformat

from ..core.clock import utcnow
from ..core.errors import error_dict
from ..core.events import AttemptProgress, KernelStarted, Throttle
from ..core.secrecy import Masker
from ..core.states import State
from ..inside import PUBLISH_MIME, publish_preview
from .attemptlog import ABANDONED, LogSinks
from .limits import OutputLimit, ValueTooLarge, json_size, max_output, max_value
from .notebook_product import export_product

log = logging.getLogger("nborch")
TIMEOUT_GRACE = 5.0  # seconds between interrupting a timed-out cell and killing its kernel
PROGRESS_INTERVAL = 0.25  # seconds between progress events of one attempt, at most


@dataclass
class AttemptJob:
    run_id: str
    task: str
    attempt: int
    notebook: str
    parameters: dict
    kernel: str
    cwd: str
    output_path: str
    log_path: str
    env: dict = field(default_factory=dict, repr=False)  # secrets included: never persisted
    withheld_env: tuple = ()  # names of the running process's environment the task must not get
    timeout: float | None = None
    secret_values: list = field(default_factory=list, repr=False)
    resources: dict = field(default_factory=dict)  # Dask worker resources the attempt needs
    command: tuple | None = None  # a command task's argv (then ``notebook`` is empty)
    products: dict = field(default_factory=dict)  # declared products: name -> path
    source: dict | None = None  # a notebook to run instead of ``notebook``'s file (generated)
    notebook_product: str | None = None  # a copy of the executed notebook goes here (.ipynb),
    #                                      or its HTML export (.html): Ploomber's `nb` product
    export_options: dict = field(default_factory=dict)  # nbconvert exporter options
    check_products: bool = False  # a success that leaves a declared product missing fails
    retry_output_path: str | None = None  # the notebook of a failure that will be retried
    relayed_log: bool = False  # the orchestrator writes the log, from the output events
    artifact_location: str | None = None  # where the artifacts go from a machine that does
    #                                       not see the run's folder (--output-dir's)
    private_dir: str | None = None  # for unmasked files (a command's values): the run's folder
    #                                 by default

    def private_folder(self) -> str:
        return self.private_dir or os.path.dirname(self.log_path)


@dataclass
class AttemptResult:
    status: str  # State.SUCCESS | FAILED | CANCELLED
    started_at: str
    ended_at: str
    output_path: str | None
    values: dict = field(default_factory=dict)
    error: dict | None = None
    artifacts: str | None = None  # where its artifacts were copied, when not the run's folder
    relayed_log: bool = False  # the orchestrator writes its log (see offhome.py)


def make_product_dirs(job: AttemptJob) -> None:
    """Create the parent folders of the task's declared products (local paths only)."""
    for path in job.products.values():
        if "://" not in path:
            os.makedirs(os.path.dirname(path), exist_ok=True)


class AttemptRunner:
    """Runs one attempt on a started ``Kernel`` (see kernels.py); the kernel's owner shuts
    it down afterwards, off the critical path."""

    def __init__(self, job: AttemptJob, kernel, emit: Callable[[Any], None] = lambda event: None):
        self.job = job
        self.kernel = kernel
        self.emit = emit
        self.masker = Masker(job.secret_values)
        self.nb = None
        self._stop_reason: str | None = None  # "cancel" | "timeout" | "abandon"
        self._abandoned: dict | None = None  # why the run gave the attempt up
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._running_cell: tuple[int, str] | None = None
        # A notebook of many instant cells must not flood the views and the store.
        self._progress = Throttle(emit, PROGRESS_INTERVAL)
        self.output_limit: OutputLimit | None = None  # set for the run, on its log
        self.value_limit = max_value(job.env)
        if kernel.pid:
            emit(KernelStarted(job.run_id, job.task, job.attempt, kernel.pid))

    # -- control, from any thread -----------------------------------------------------

    def cancel(self) -> None:
        self._stop("cancel", signal.SIGKILL)

    def abandon(self, reason: str) -> None:
        """The run gave this attempt up (its orchestrator or scheduler is gone): stop the
        kernel and write nothing more than the log's end line: no notebook, no values."""
        self._abandoned = error_dict(ABANDONED, reason)
        self._stop("abandon", signal.SIGKILL)

    def _on_timeout(self) -> None:
        # Interrupt first so the saved notebook shows where the cell hung, then kill.
        if self._stop("timeout", signal.SIGINT):
            threading.Timer(TIMEOUT_GRACE, self._kill_if_running).start()

    def _kill_if_running(self) -> None:
        if not self._done.is_set():
            self.kernel.kill(signal.SIGKILL)

    def _stop(self, reason: str, signum: int) -> bool:
        with self._lock:
            if self._done.is_set() or self._stop_reason:
                return False
            self._stop_reason = reason
        self.kernel.kill(signum)
        return True

    def cell_started(self, done: int, total: int, source: str) -> None:
        line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
        self._running_cell = (done, line)
        job = self.job
        self._progress(AttemptProgress(job.run_id, job.task, job.attempt, done, total,
                                       self.masker.text(line)[:120]))

    # -- the attempt ------------------------------------------------------------------

    def run(self) -> AttemptResult:
        from papermill.exceptions import PapermillExecutionError

        from .papermill_engine import execute_notebook

        job = self.job
        make_product_dirs(job)
        started = utcnow()
        timer = threading.Timer(job.timeout, self._on_timeout) if job.timeout else None
        error = None
        with LogSinks(job, self.masker, self.emit, started) as sinks:
            if timer:
                timer.daemon = True
                timer.start()
            self.output_limit = OutputLimit(max_output(job.env), sinks["stderr"])
            self.kernel.attach_stderr(self.output_limit.wrap(sinks["stderr"]))
            try:
                execute_notebook(
                    _source(job), job.parameters, job.kernel,
                    stdout_file=sinks["stdout"], stderr_file=sinks["stderr"],
                    nborch_attempt=self, km=self.kernel.km, nborch_kc=self.kernel.kc)
            except PapermillExecutionError as exc:
                error = {"type": exc.ename, "message": exc.evalue, "cell": exc.exec_count,
                         "cell_source": exc.source, "traceback": _plain_traceback(exc.traceback)}
            except Exception as exc:  # kernel died or would not start; cancel and timeout land here
                error = self._failure(exc)
            finally:
                self._progress.close()
                if timer:
                    timer.cancel()
                with self._lock:
                    self._done.set()
            if error is None and job.check_products:
                error = _missing_products(job)
            if error is not None and self._stop_reason == "timeout":
                error = self._timeout_error(error)
            abandoned = self._stop_reason == "abandon"
            if abandoned:  # its result may reach nobody: the log says why
                error = self._abandoned
            ended = utcnow()
            sinks.close(ended, error)
        if abandoned:
            return AttemptResult(State.FAILED, started, ended, None, {}, error)
        status = State.SUCCESS if error is None else (
            State.CANCELLED if self._stop_reason == "cancel" else State.FAILED)
        # The executed notebook, secrets masked value by value (before its published values
        # are read): serialized once for every copy of it.
        text = None
        if self.nb is not None:
            self.masker.notebook(self.nb)
            _refresh_publish_previews(self.nb)
            text = nbformat.writes(self.nb)
        output_path, unsaved = self._save(text, status)
        if unsaved is not None and error is None:
            status, error = State.FAILED, unsaved
        elif unsaved is not None:
            error = {**error, "message": f"{error['message']}; {unsaved['message']}"}
        if job.notebook_product and text is not None:
            try:
                export_product(text, job, failed=error is not None)
            except Exception as exc:  # a bad exporter option, an unwritable folder
                if error is None:
                    status, error = State.FAILED, error_dict(
                        "ExportError", f"cannot write the executed notebook to "
                                       f"{job.notebook_product}: {type(exc).__name__}: {exc}")
        values = {}
        try:
            if self.nb is not None:  # masked with the notebook
                values = _published_values(self.nb, self.value_limit)
        except ValueTooLarge as exc:  # nborch.publish checks; this catches a bypass
            if error is None:
                status, error = State.FAILED, error_dict("ValueTooLarge", str(exc))
        return AttemptResult(status, started, ended, output_path, values,
                             self.masker.data(error))

    def _failure(self, exc: Exception) -> dict:
        from nbclient.exceptions import DeadKernelError
        process = self.kernel.process
        if isinstance(exc, DeadKernelError) or (process is not None and process.poll() is not None):
            return error_dict("DeadKernelError", self._death_reason(),
                              self._running_cell[0] + 1 if self._running_cell else None)
        kind = type(exc).__name__
        if "kernel" in kind.lower() or isinstance(exc, RuntimeError):
            kind = "KernelStartError" if self._running_cell is None else kind
        return error_dict(kind, str(exc) or kind)

    def _death_reason(self) -> str:
        code = None
        process = self.kernel.process
        if process is not None:
            try:
                code = process.wait(timeout=5)
            except Exception:
                code = process.poll()
        if self._stop_reason == "cancel":
            return "kernel stopped: the run was cancelled"
        if code is None:
            return "kernel died"
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return f"kernel died: killed by {name}{hint}"
        return f"kernel died (exit code {code})"

    def _timeout_error(self, error: dict) -> dict:
        limit = self.job.timeout
        where = ""
        if self._running_cell:
            where = f"; it was running cell {self._running_cell[0] + 1}: {self._running_cell[1]}"
        return {**error, "type": "TimeoutError", "cell": error.get("cell") or (
                    self._running_cell[0] + 1 if self._running_cell else None),
                "message": f"attempt stopped after its timeout of {limit:g}s{where}"}

    def _save(self, text: str | None, status: str) -> tuple[str | None, dict | None]:
        """Write the executed notebook: (where, None), or (None, the error) when it cannot
        be written, which fails the attempt rather than the run."""
        if text is None:
            return None, None
        from . import outputs
        job = self.job
        path = job.retry_output_path if status == State.FAILED and job.retry_output_path \
            else job.output_path
        try:
            outputs.write_text(path, text)
        except Exception as exc:  # unwritable folder, storage unreachable or refusing
            return None, error_dict("OutputWriteError", f"cannot write the executed notebook "
                                    f"to {path}: {type(exc).__name__}: {exc}")
        return path, None


def _source(job: AttemptJob):
    """What papermill executes: the path of an ``.ipynb``, a script notebook read with
    jupytext (its executed copy is saved as ``.ipynb``), or the job's generated notebook."""
    from ..spec.notebooks import is_script, read_notebook
    if job.source is not None:
        return nbformat.from_dict(json.loads(json.dumps(job.source)))  # a copy to execute
    return read_notebook(job.notebook) if is_script(job.notebook) else job.notebook


def _missing_products(job: AttemptJob) -> dict | None:
    """Ploomber fails a task that succeeds without writing its products; so do we."""
    missing = [path for path in job.products.values() if path != job.notebook_product
               and "://" not in path and not os.path.exists(path)]
    if not missing:
        return None
    return error_dict("ProductMissing", "the task ran successfully but did not write its "
                      f"product(s): {', '.join(missing)}")


def _publish_outputs(nb):
    """Each ``(output, payload)`` of an ``nborch.publish`` call in ``nb``."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(PUBLISH_MIME)
            if isinstance(payload, dict) and "name" in payload:
                yield output, payload


def _published_values(nb, limit: int) -> dict:
    """The values published in an executed notebook; one over ``limit`` bytes raises
    ``ValueTooLarge`` (the client kept only its name and size: see papermill_engine.py)."""
    values = {}
    for _, payload in _publish_outputs(nb):
        value = payload.get("value")
        size = json_size(value) if "value" in payload else payload.get("size", 0)
        if size > limit:
            raise ValueTooLarge(payload["name"], size, limit)
        values[payload["name"]] = value
    return values


def _refresh_publish_previews(nb) -> None:
    """The kernel shortened each published value's text preview before it could be masked;
    write it again from the masked value."""
    for output, payload in _publish_outputs(nb):
        if "value" in payload:  # not one the client dropped for its size
            output["data"]["text/plain"] = publish_preview(payload["name"], payload["value"])


def _plain_traceback(lines: list[str] | None) -> str | None:
    if not lines:
        return None
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(lines))
