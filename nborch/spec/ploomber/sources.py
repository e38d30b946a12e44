"""A Ploomber task's files: which kind of task nborch makes of its source, how the ``nb``
product is written (the notebook itself, or exported by nbconvert), its ``resources_``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...core.errors import SpecError
from .conventions import PloomberTask
from .keys import EXPORTERS, FILE_SUFFIXES, NO_EXPORT, NOTEBOOK_SUFFIXES, TASK_CLASSES


def kind(src: str, item: dict, where: str, problems: list[str]) -> str | None:
    """"notebook" (a notebook or a script) or "function" (a dotted path), or None with a
    problem saying why the source is not supported."""
    suffix = Path(src).suffix.lower()
    if suffix in NOTEBOOK_SUFFIXES:
        found = "notebook"
    elif suffix not in FILE_SUFFIXES and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", src):
        found = "function"
    else:
        why = {".sql": "SQL tasks need Ploomber's database clients; run the query from a "
                       "notebook or a command task (e.g. your database's CLI)",
               ".sh": "make the shell script a command task in nborch's own format",
               ".r": "R scripts are not run by nborch", ".rmd": "R notebooks are not run "
               "by nborch"}.get(suffix, "nborch runs notebooks, .py scripts and dotted "
                                        "paths to Python functions")
        problems.append(f"{where}: source {src!r} is not supported: {why}")
        return None
    cls = item.get("class")
    if cls is not None and cls not in TASK_CLASSES[found]:
        problems.append(f"{where}: task class {cls!r} is not supported: nborch runs "
                        f"{' and '.join(TASK_CLASSES[found])} tasks for this source")
        return None
    if item.get("product_class", "File") != "File":
        problems.append(f"{where}: product_class {item['product_class']!r} is not "
                        "supported; products are files")
        return None
    return found


def nb_product(item: dict, where: str, product: Any, problems: list[str]) -> PloomberTask | None:
    """Which product is the executed notebook, and how it is exported (None with a problem
    when that is not supported)."""
    export = item.get("nbconvert_export_kwargs") or {}
    if not isinstance(export, dict):
        problems.append(f"{where}: nbconvert_export_kwargs must be a mapping")
        return None
    if item.get("class") == "ScriptRunner":  # a script run without an output notebook
        return PloomberTask()
    if isinstance(product, dict) and "nb" not in product:
        problems.append(f"{where}: 'product' has no 'nb' key: a notebook task needs "
                        "one, the path of its executed notebook")
        return None
    key = "nb" if isinstance(product, dict) else "product"
    nb_path = product if isinstance(product, str) else product["nb"]
    exporter = item.get("nbconvert_exporter_name")
    suffix = Path(nb_path).suffix.lower()
    if exporter is not None:
        if exporter in NO_EXPORT:
            problems.append(f"{where}: nbconvert_exporter_name {exporter!r} is not "
                            f"supported ({NO_EXPORT[exporter]}); export to .html")
            return None
        problem = exporter_problem(exporter)
        if problem:
            problems.append(f"{where}: {problem}")
            return None
    elif suffix == ".pdf":
        problems.append(f"{where}: the executed notebook {nb_path!r} as PDF is not "
                        "supported (nbconvert needs LaTeX for it); make it .html "
                        "(and print that to PDF if you need one)")
        return None
    elif suffix not in EXPORTERS:
        problems.append(f"{where}: the executed notebook {nb_path!r} must end in "
                        f"{', '.join(EXPORTERS)} (or set nbconvert_exporter_name)")
        return None
    return PloomberTask(nb=key, export_options=dict(export), exporter=exporter)


def exporter_problem(name: str) -> str | None:
    try:
        import nbconvert
    except ImportError:
        return ("nbconvert_exporter_name needs nbconvert, which is not installed "
                "(pip install nbconvert)")
    try:
        nbconvert.get_exporter(name)
    except Exception:
        return (f"nbconvert_exporter_name {name!r} is not one of nbconvert's exporters "
                f"({', '.join(nbconvert.get_export_names())})")
    return None


def resources(value: Any, root: Path, where: str, problems: list[str]) -> Any:
    """``params.resources_``: files the task reads, as absolute paths (each must exist)."""
    if not isinstance(value, dict):
        problems.append(f"{where}: params.resources_ must be a mapping of names to files")
        return value
    paths = {k: (root / str(v)).resolve() for k, v in value.items()}
    problems += [f"{where}: params.resources_ {k!r}: {p} is not a file"
                 for k, p in paths.items() if not p.is_file()]
    return {k: str(p) for k, p in paths.items()}


def imported_tasks(value: Any, root: Path, problems: list[str],
                   parse: Callable[[str, str], Any]) -> list:
    """The tasks of ``meta.import_tasks_from`` (a YAML list of tasks), their relative file
    sources made relative to that file's folder, as Ploomber reads them."""
    path = root / str(value)
    try:
        tasks = parse(path.read_text(encoding="utf-8"), str(path))
    except SpecError as exc:
        problems.extend(exc.problems)
        return []
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"meta: import_tasks_from: cannot read {path}: {exc}")
        return []
    if not isinstance(tasks, list) or not tasks:
        problems.append(f"meta: import_tasks_from: {path} must be a list of tasks")
        return []
    for task in tasks:
        source = task.get("source") if isinstance(task, dict) else None
        if isinstance(source, str) and not Path(source).is_absolute() and \
                Path(source).suffix in _FILE_SOURCES:
            task["source"] = str((path.parent / source).resolve())
    return tasks


_FILE_SOURCES = (".py", ".R", ".Rmd", ".r", ".ipynb", ".sql", ".sh")
