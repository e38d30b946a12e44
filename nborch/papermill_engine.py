"""nborch's papermill engine: papermill's nbclient engine with the hooks an attempt needs.

Importing this module registers the engine as ``nborch`` (importing papermill costs about
a second, so only the attempt runner imports it).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading

from jupyter_core.utils import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines

from .inside import PUBLISH_MIME

ENGINE_NAME = "nborch"
log = logging.getLogger("nborch")


class NborchClient(PapermillNotebookClient):
    """papermill's client, plus: the attempt's cwd and environment for the kernel, the
    kernel's own stderr into the attempt's log, progress hooks, and text outputs logged."""

    def __init__(self, nb_man, attempt, **kw):
        super().__init__(nb_man, **kw)
        self.attempt = attempt
        self._code_cells = sum(1 for c in nb_man.nb.cells if c.cell_type == "code" and c.source.strip())
        self._done = 0
        self.on_cell_execute = self._cell_execute
        self.on_cell_executed = self._cell_executed

    async def async_start_new_kernel(self, **kwargs):
        job = self.attempt.job
        kwargs["cwd"] = job.cwd
        kwargs["env"] = {**os.environ, **job.env}
        kwargs["stdout"] = subprocess.DEVNULL
        kwargs["stderr"] = subprocess.PIPE
        if getattr(self.km, "ipykernel", False):
            # The kernel's start-up chatter (transport warnings) is not the user's output.
            self.extra_arguments = [*self.extra_arguments, "--IPKernelApp.log_level=ERROR"]
        await super().async_start_new_kernel(**kwargs)
        process = getattr(self.km.provisioner, "process", None)
        if process is not None and process.stderr is not None:
            threading.Thread(target=_drain, args=(process.stderr, self.stderr_file),
                             daemon=True).start()
        self.attempt.kernel_started(self.km)

    # nbclient binds the sync wrapper to its own coroutine; rebind it to ours.
    start_new_kernel = run_sync(async_start_new_kernel)

    def _cell_execute(self, cell, cell_index):
        self.attempt.cell_started(self._done, self._code_cells, cell.source)

    def _cell_executed(self, cell, cell_index, execute_reply):
        self._done += 1

    def log_output_message(self, output):
        if output.output_type == "stream":
            return super().log_output_message(output)
        data = output.get("data", {})
        if output.output_type == "error":
            self.stderr_file.write(f"{output.ename}: {output.evalue}\n")
        elif "text/plain" in data and PUBLISH_MIME not in data:
            self.stdout_file.write("".join(data["text/plain"]) + "\n")


def _drain(pipe, sink) -> None:
    """Copy what the kernel process writes to its stderr (crash messages) into the log."""
    for raw in iter(pipe.readline, b""):
        sink.write(raw.decode("utf-8", "replace"))
    pipe.close()


class NborchEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                 stderr_file=None, start_timeout=60, execution_timeout=None,
                                 nborch_attempt=None, **kwargs):
        nborch_attempt.nb = nb_man.nb
        client = NborchClient(nb_man, attempt=nborch_attempt, kernel_name=kernel_name, log=log,
                              startup_timeout=start_timeout, timeout=None, stdout_file=stdout_file,
                              stderr_file=stderr_file, shutdown_kernel="immediate")
        return client.execute()


papermill_engines.register(ENGINE_NAME, NborchEngine)
logging.getLogger("papermill").setLevel(logging.ERROR)
