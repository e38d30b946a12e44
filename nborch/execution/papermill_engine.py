"""nborch's papermill engine: papermill's nbclient engine with the hooks an attempt needs.

Importing this module registers the engine as ``nborch`` (importing papermill costs about
a second, so only the attempt runner imports it).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections import OrderedDict

from nbformat.v4 import new_output
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.execute import (
    prepare_notebook_metadata,
    raise_for_execution_errors,
    remove_error_markers,
)
from papermill.iorw import load_notebook_node, local_file_io_cwd
from papermill.parameterize import add_builtin_parameters, parameterize_notebook, parameterize_path

from ..inside import PUBLISH_MIME
from .limits import KERNEL_SETUP, json_size

ENGINE_NAME = "nborch"
# Seconds a finished cell's output may take to arrive after its reply. nbclient waits 4 s,
# then papermill fails the cell with a CellTimeoutError, however much output is still
# coming: a cell that printed a lot, on a busy machine, failed although nothing hung.
IOPUB_TIMEOUT = 60
# nbclient's own messages: its warnings and errors (its INFO says "Executing notebook with
# kernel" for every attempt, which `nborch run -v` need not repeat)
log = logging.getLogger("nborch.nbclient")
log.setLevel(logging.WARNING)


class _NoKernelDiedLine(logging.Filter):
    """nbclient logs "Kernel died while waiting for execute reply" before it raises
    DeadKernelError. The attempt records that death itself, with its reason, and a cancel
    stops kernels on purpose: in the caller's output (a notebook's cell) the line is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Kernel died")


log.addFilter(_NoKernelDiedLine())
SOURCES_KEPT = 16  # parsed source notebooks kept, each of at most SOURCE_KEPT_SIZE bytes
SOURCE_KEPT_SIZE = 1024 * 1024
_sources: OrderedDict = OrderedDict()  # (path, stat) -> the notebook as papermill loads it
_sources_lock = threading.Lock()


def execute_notebook(source, parameters: dict, kernel_name: str, **engine_kwargs):
    """``papermill.execute_notebook`` as an attempt uses it, less what it would throw away:
    no output path (the attempt writes the notebook itself, masked), so no serializing of it
    for nothing; no check of the parameters against the notebook's (papermill only logs it,
    and its log is silenced); the source notebook parsed once while its file is unchanged (a
    grid's instances share one). Raises ``PapermillExecutionError`` for a failed cell."""
    path = source if isinstance(source, str) else None
    if path is not None:
        source = parameterize_path(path, add_builtin_parameters(parameters))
    with local_file_io_cwd():
        nb = _load(source)
    if parameters:
        nb = parameterize_notebook(nb, parameters, kernel_name=kernel_name,
                                   engine_name=ENGINE_NAME)
    nb = remove_error_markers(prepare_notebook_metadata(nb, source, None))
    nb = papermill_engines.execute_notebook_with_engine(
        ENGINE_NAME, nb, input_path=source, output_path=None, kernel_name=kernel_name,
        progress_bar=False, log_output=False, **engine_kwargs)
    raise_for_execution_errors(nb, None)
    return nb


def _load(source):
    """A fresh copy of the source notebook, from the one parsed before if its file is the
    same (path, inode, modification and change times, size)."""
    try:
        stat = os.stat(source) if isinstance(source, str) else None
    except OSError:
        stat = None
    if stat is None or stat.st_size > SOURCE_KEPT_SIZE:
        return load_notebook_node(source)
    key = (source, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
    with _sources_lock:
        nb = _sources.get(key)
        if nb is not None:
            _sources.move_to_end(key)
    if nb is None:
        nb = load_notebook_node(source)
        with _sources_lock:
            _sources[key] = nb
            while len(_sources) > SOURCES_KEPT:
                _sources.popitem(last=False)
    return copy.deepcopy(nb)


class NborchClient(PapermillNotebookClient):
    """papermill's client on the attempt's own started kernel and client (nborch starts
    kernels itself, ahead of need), plus progress hooks, text outputs logged, and the
    attempt's output limit: outputs beyond it are dropped as they arrive, before they are
    stored in the notebook, so a cell printing gigabytes keeps memory and files bounded."""

    def __init__(self, nb_man, attempt, kc, **kw):
        super().__init__(nb_man, **kw)
        self.attempt = attempt
        self.kc = kc
        self._code_cells = sum(1 for c in nb_man.nb.cells
                               if c.cell_type == "code" and c.source.strip())
        self._done = 0
        self.on_cell_execute = self._cell_execute
        self.on_cell_executed = self._cell_executed
        self.limit = attempt.output_limit
        self.value_limit = attempt.value_limit
        self._kept: dict[int, int] = {}  # cell index -> bytes of its outputs kept
        self._markers: dict[int, tuple] = {}  # cell index -> (marker output, count, bytes)

    def execute(self, **kwargs):
        """papermill's ``execute``, less its ``kernel_info`` round trip after the cells: the
        kernel answered one as it started (``Kernel.info``), and kernels are never reused."""
        language_info = self.attempt.kernel.info.get("language_info")
        if language_info is None:
            return super().execute(**kwargs)
        self.reset_execution_trackers()
        with self.setup_kernel(**kwargs):
            self.papermill_execute_cells()
            self.nb.metadata["language_info"] = language_info
            self.set_widgets_metadata()
        return self.nb

    def papermill_execute_cells(self):
        if getattr(self.km, "ipykernel", False) and not self.attempt.kernel.streams_split:
            self.wait_for_reply(self.kc.execute(KERNEL_SETUP, silent=True, store_history=False))
        super().papermill_execute_cells()

    def _cell_execute(self, cell, cell_index):
        self.attempt.cell_started(self._done, self._code_cells, cell.source)

    def _cell_executed(self, cell, cell_index, execute_reply):
        self._done += 1

    def output(self, outs, msg, display_id, cell_index):
        content = msg["content"]
        data = content.get("data") or {}
        if PUBLISH_MIME in data:  # a published value is never dropped, unless too large
            self._check_published(data)
        size = _output_size(content)
        if self.clear_before_next_output:  # a clear_output(wait=True) takes effect now
            outs[:] = []
            self.clear_display_id_mapping(cell_index)
            self.clear_before_next_output = False
            self._cleared(cell_index)
        force = PUBLISH_MIME in data or msg["msg_type"] == "error"
        kept = self.limit.keep(size, force=force, partial=msg["msg_type"] == "stream")
        out = None
        if kept == size or kept > 0:
            if kept < size:  # the part of a stream's text that fits
                content["text"] = content["text"][:kept]
            self._kept[cell_index] = self._kept.get(cell_index, 0) + kept
            out = super().output(outs, msg, display_id, cell_index)
            if kept == size:
                return out
        # Dropped (all or some): one marker per cell, counting what the cell lost.
        marker, count, dropped = self._markers.get(cell_index) or (None, 0, 0)
        if marker is None:
            self._seal(outs)
            marker = new_output("stream", name="stderr", text="")
            outs.append(marker)
        count, dropped = count + 1, dropped + size - kept
        marker.text = self.limit.marker(count, dropped)
        self._markers[cell_index] = (marker, count, dropped)
        if out is not None:  # papermill logs it after this returns: tell after it
            self.log_output_message(out)
            out = None
        self.limit.tell()
        return out

    def _seal(self, outs):
        """The cell's text ends where output starts being dropped, maybe inside a secret
        whose rest is dropped: mask it now, and cut off an end that begins a secret."""
        masker = self.attempt.masker
        for out in outs:
            if out.get("output_type") == "stream":
                text = masker.text(out["text"])
                out["text"] = text[:len(text) - masker.held_tail(text)]

    def clear_output(self, outs, msg, cell_index):
        if not msg["content"].get("wait"):
            self._cleared(cell_index)
        return super().clear_output(outs, msg, cell_index)

    def _cleared(self, cell_index):
        self.limit.release(self._kept.pop(cell_index, 0))
        self._markers.pop(cell_index, None)

    def _check_published(self, data):
        """A value over the limit (a ``display`` that bypassed ``nborch.publish``'s check) is
        not kept: only its name and size, which fail the attempt when values are read."""
        payload = data[PUBLISH_MIME]
        if isinstance(payload, dict) and "value" in payload:
            size = json_size(payload["value"])
            if size > self.value_limit:
                data[PUBLISH_MIME] = {"name": payload.get("name"), "size": size}
                data["text/plain"] = f"nborch: published value {payload.get('name')!r} dropped: " \
                                     f"{size:,} bytes"

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
                              timeout=None, iopub_timeout=IOPUB_TIMEOUT, stdout_file=stdout_file,
                              stderr_file=stderr_file)
        try:
            return client.execute()
        finally:
            nborch_attempt.output_limit.finish()


def _output_size(content: dict) -> int:
    """Bytes an output message adds to the notebook (its text and data; near enough)."""
    if "text" in content:
        return len(content["text"])
    if "traceback" in content:
        return sum(len(line) for line in content["traceback"]) + len(content.get("evalue", ""))
    return sum(len(v) if isinstance(v, str) else json_size(v)
               for v in (content.get("data") or {}).values())


papermill_engines.register(ENGINE_NAME, NborchEngine)
logging.getLogger("papermill").setLevel(logging.ERROR)
