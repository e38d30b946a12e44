"""What ``nborch run`` and ``resume`` do first, so that the first task starts sooner.

Before a run's first task the command imports nborch, nbformat and jupyter_client, loads
and checks the pipeline, and starts the kernel template (which imports ipykernel). The
template is a process of its own: started first, it imports on the second CPU while the
command does the rest. And one import is deferred that nothing in a run uses.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

DEFERRED = "rfc3987_syntax"


_forking = False  # whether ``start`` started a template


def start(executor: str | None) -> None:
    """First thing: defer the import below, and start the template of the usual kernel
    (``python3``), unless kernels will not be forked here."""
    global _forking
    defer_rfc3987_syntax()
    if executor in (None, "local") and os.environ.get("NBORCH_FORK_KERNELS", "1") != "0":
        from ..execution.forking import start_early
        start_early(["python3"])
        _forking = True


def loaded(pipeline, executor: str | None) -> None:
    """The pipeline is loaded: start the templates of its notebook tasks' kernels too (a
    task's ``kernel:``, else ``python3``: the notebook's own is known once it is checked;
    kernels with the same interpreter options share one template), or stop the one
    ``start`` started when no task has a kernel or its tasks run elsewhere (the pipeline's
    ``executor:``, unless the command line's ``executor`` says local)."""
    if not _forking:
        return
    from ..execution import forking
    names = {task.kernel or "python3" for task in pipeline.tasks.values()
             if task.command is None}
    if not names or (executor is None and pipeline.executor not in (None, "local")):
        forking.stop_early()
    elif names != {"python3"}:
        forking.start_early(sorted(names))


def defer_rfc3987_syntax() -> None:
    """nbformat imports jsonschema, which imports ``rfc3987_syntax`` where it is installed
    (JupyterLab's dependencies bring it) for its "iri" format check; that import compiles a
    grammar: 1.5 seconds and more here (5 on a busy machine), more than the rest of the
    command's imports together. nbformat checks no formats, and nothing else in a run does;
    so until one of its names is used, a stand-in takes its place, and the first use
    imports the real module."""
    if DEFERRED in sys.modules or "jsonschema" in sys.modules:
        return
    try:
        if importlib.util.find_spec(DEFERRED) is None:
            return
    except (ImportError, ValueError):
        return
    stand_in = types.ModuleType(DEFERRED, "stands for rfc3987_syntax until first used")

    def real() -> types.ModuleType:
        if sys.modules.get(DEFERRED) is stand_in:
            del sys.modules[DEFERRED]
        return importlib.import_module(DEFERRED)

    def is_valid_syntax(*args, **kwargs):  # what jsonschema imports from it
        return real().is_valid_syntax(*args, **kwargs)

    def __getattr__(name: str):  # anything else: the real one's
        if name.startswith("__"):  # what the import system asks a module (__path__, ...)
            raise AttributeError(name)
        return getattr(real(), name)

    stand_in.is_valid_syntax = is_valid_syntax
    stand_in.__getattr__ = __getattr__
    sys.modules[DEFERRED] = stand_in
