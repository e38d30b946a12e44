"""What a task read from a Ploomber project carries (``PloomberTask``), and the few places
that read it: the engine (``upstream`` in Ploomber's shape, the attempt's extra fields) and
``validate.prepare`` (relaxed parameter checks). ``task`` is a ``core.model.Task`` whose
``ploomber`` is set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..notebooks import NotebookInfo


@dataclass(frozen=True)
class PloomberTask:
    """What makes a task keep Ploomber's conventions (see the package's docstring)."""
    upstream: dict = field(default_factory=dict)  # key in `upstream` -> task name, or a tuple
    #                                               of task names for a wildcard key
    nb: str | None = None          # product key of the executed notebook ("nb" or "product")
    static_analysis: str = "regular"
    export_options: dict = field(default_factory=dict)  # nbconvert_export_kwargs
    exporter: str | None = None    # nbconvert_exporter_name
    function: str | None = None    # dotted path of a function task
    source: dict | None = None     # the notebook generated for a function task


def looks_like_ploomber(data: Any) -> bool:
    """A Ploomber spec: a list of tasks with ``source``, a mapping whose ``tasks`` is one, or
    a factory (``location: module.function``)."""
    if isinstance(data, dict) and "location" in data and not isinstance(data.get("tasks"), dict):
        return True
    tasks = data.get("tasks") if isinstance(data, dict) else data
    return isinstance(tasks, list) and any(isinstance(t, dict) and "source" in t for t in tasks)


def injected_upstream(task: Any, product_of: Callable[[str], Any]) -> dict:
    """The ``upstream`` a Ploomber task gets: each upstream task's product (a wildcard key:
    a mapping of the matching tasks' names to their products)."""
    return {key: product_of(names) if isinstance(names, str)
            else {name: product_of(name) for name in names}
            for key, names in task.ploomber.upstream.items()}


def ploomber_job(info: PloomberTask, products: dict) -> dict:
    """What an ``AttemptJob`` of a Ploomber task has beyond a notebook task's."""
    options = dict(info.export_options)
    if info.exporter:
        options["exporter_name"] = info.exporter
    return {"source": info.source, "notebook_product": products.get(info.nb) if info.nb else None,
            "export_options": options, "check_products": True}


def parameter_problems(who: str, task: Any, info: NotebookInfo, values: dict) -> list[str]:
    """Ploomber accepts parameters the notebook does not declare (it injects them anyway)
    unless ``static_analysis: strict``; then they, and declared ones nobody passes, are errors."""
    nb = task.notebook
    if values and not info.has_parameters_cell:
        return [f"{who}: {nb} has no cell tagged 'parameters' (Ploomber needs one too)"]
    problems = [f"{who}: 'upstream' is injected and cannot be a parameter"
                for key in values if key == "upstream"]
    if task.ploomber.static_analysis != "strict" or not info.parameters:
        return problems
    injected = ("upstream", "product")
    unexpected = [k for k in values if k not in info.parameters and k not in injected]
    missing = [k for k in info.parameters if k not in values and k not in injected]
    problems += [f"{who}: parameter {k!r} is not declared in the parameters cell of {nb} "
                 "(static_analysis: strict)" for k in unexpected]
    problems += [f"{who}: parameter {k!r} of {nb} is not given in 'params' "
                 "(static_analysis: strict)" for k in missing]
    return problems
