"""nborch's papermill engine: papermill's nbclient engine with the hooks an attempt needs.

Importing this module registers the engine as ``nborch`` (importing papermill costs about
a second, so only the attempt runner imports it).
"""

from __future__ import annotations

import logging

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines

from .inside import PUBLISH_MIME

ENGINE_NAME = "nborch"
log = logging.getLogger("nborch")


class NborchClient(PapermillNotebookClient):
    """papermill's client on the attempt's own started kernel and client (nborch starts
    kernels itself, ahead of need), plus progress hooks and text outputs logged."""

    def __init__(self, nb_man, attempt, kc, **kw):
        super().__init__(nb_man, **kw)
        self.attempt = attempt
        self.kc = kc
        self._code_cells = sum(1 for c in nb_man.nb.cells if c.cell_type == "code" and c.source.strip())
        self._done = 0
        self.on_cell_execute = self._cell_execute
        self.on_cell_executed = self._cell_executed

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


class NborchEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                 stderr_file=None, start_timeout=60, execution_timeout=None,
                                 nborch_attempt=None, km=None, nborch_kc=None, **kwargs):
        nborch_attempt.nb = nb_man.nb
        client = NborchClient(nb_man, attempt=nborch_attempt, kc=nborch_kc, km=km,
                              kernel_name=kernel_name, log=log, startup_timeout=start_timeout,
                              timeout=None, stdout_file=stdout_file, stderr_file=stderr_file)
        return client.execute()


papermill_engines.register(ENGINE_NAME, NborchEngine)
logging.getLogger("papermill").setLevel(logging.ERROR)
