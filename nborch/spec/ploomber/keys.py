"""The keys of a Ploomber ``pipeline.yaml``: which nborch reads, which it accepts and ignores,
and which it refuses, each with the reason and what to do instead."""

from __future__ import annotations

import difflib
from typing import Any

# Those that only tune Ploomber itself are accepted and have no effect here (nborch runs
# tasks in parallel, with papermill and nbconvert defaults).
PIPELINE_KEYS = ("tasks", "meta", "executor", "on_render", "on_finish", "on_failure",
                 "serializer", "unserializer")
META_KEYS = ("extract_upstream", "extract_product", "product_relative_to_source",
             "product_default_class", "jupyter_hot_reload", "jupyter_functions_as_notebooks",
             "import_tasks_from")
TASK_KEYS = ("source", "product", "name", "params", "grid", "upstream", "on_render", "on_finish",
             "on_failure", "static_analysis", "local_execution", "kernelspec_name",
             "papermill_params", "nbconvert_export_kwargs", "nbconvert_exporter_name",
             "check_if_kernel_installed", "debug_mode", "ext_in", "class", "product_class",
             "serializer", "unserializer", "executor")  # and nborch's own task options

_CLIENT = ("clients are Ploomber objects nborch does not create: a database client runs SQL "
           "tasks (run the query from a notebook or a command task, e.g. your database's "
           "CLI); a File client copies each product to storage after the task (a backup "
           "folder, S3, GCS): nborch writes products only to their paths, so remove it and "
           "copy them in the task or in an on_finish hook")
# What nborch does not run, and what to do instead: a validation error naming the task.
UNSUPPORTED = {
    "clients": _CLIENT,
    "client": _CLIENT,
    "product_client": "product clients (product metadata kept in a database or a bucket) "
                      "are Ploomber objects nborch does not create; remove it (nborch keeps "
                      "its own records for --incremental)",
    "location": "pipelines built by a Python factory function are not read by nborch; list "
                "the tasks in a pipeline.yaml (tasks: [{source: ..., product: ...}])",
    "config": "DAG configuration is Ploomber's own; remove it",
    "source_loader": "sources loaded from an installed package are not supported; give paths "
                     "relative to pipeline.yaml",
}
# serializer/unserializer: nborch calls a function task with ``product`` and upstream paths
SERIALIZER = ("nborch does not call serializers: it calls a function task with 'product' "
              "(the path to write) and 'upstream' (its upstream tasks' paths), as Ploomber "
              "does without a serializer; make the function write its product and read its "
              "upstream files, then remove the serializer (or set it to null)")

NOTEBOOK_SUFFIXES = (".ipynb", ".py")
FILE_SUFFIXES = (".sql", ".sh", ".r", ".rmd", ".ipynb", ".py")  # a source, not a dotted path
# The ``nb`` product of a notebook task: its format, by extension, as Ploomber exports it
# with nbconvert; ``.ipynb`` is the executed notebook as it is.
EXPORTERS = {".ipynb": None, ".html": "html", ".md": "markdown", ".tex": "latex",
             ".rst": "rst"}
NO_EXPORT = {"pdf": "PDF needs LaTeX (xelatex) installed", "webpdf": "webpdf needs Chromium",
             "qtpdf": "qtpdf needs Qt", "qtpng": "qtpng needs Qt"}
STATIC_ANALYSIS = {"regular": "regular", "strict": "strict", "disable": "disable",
                   True: "regular", False: "disable", "disabled": "disable"}
TASK_CLASSES = {"notebook": ("NotebookRunner", "ScriptRunner"), "function": ("PythonCallable",)}


def unknown_keys(mapping: Any, allowed: tuple, where: str) -> list[str]:
    """A problem for each key of ``mapping`` nborch refuses or does not know."""
    problems: list[str] = []
    if not isinstance(mapping, dict):
        return problems
    for key in mapping:
        if key in UNSUPPORTED and mapping[key] is None:
            continue  # e.g. `client: null`
        if key in UNSUPPORTED:
            problems.append(f"{where}: {key!r} is not supported: {UNSUPPORTED[key]}")
        elif key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where}: unknown key {key!r}{hint}")
        elif key in ("serializer", "unserializer") and mapping[key] is not None:
            problems.append(f"{where}: {key!r} is not supported: {SERIALIZER}")
    return problems
