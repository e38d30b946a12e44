"""What a task read from a Ploomber project carries while it is read (``Draft``,
``PloomberTask``), and the generic ``ProductConvention`` it becomes: the engine, the checks
and the attempt read that, and know nothing of Ploomber."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.task import ProductConvention


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


@dataclass
class Draft:
    """A task read from the spec, before its upstream names are known."""
    name: str                      # a grid's: the name shown for the whole grid
    notebook: Path
    where: str
    params: dict
    product: Any
    upstream_keys: list
    options: dict
    ploomber: PloomberTask
    hooks: dict
    name_template: str = ""        # a grid's `name:` (NAME + index, or [[placeholders]])
    instances: list | None = None  # [(name, params, product)] of a grid
    func: Any = None  # a function task's functions.Function

    @property
    def names(self) -> list[str]:
        return [i[0] for i in self.instances] if self.instances is not None else [self.name]


def looks_like_ploomber(data: Any) -> bool:
    """A Ploomber spec: a list of tasks with ``source``, a mapping whose ``tasks`` is one, or
    a factory (``location: module.function``)."""
    if isinstance(data, dict) and "location" in data and not isinstance(data.get("tasks"), dict):
        return True
    tasks = data.get("tasks") if isinstance(data, dict) else data
    return isinstance(tasks, list) and any(isinstance(t, dict) and "source" in t for t in tasks)


def convention(info: PloomberTask, source: dict | None = None) -> ProductConvention:
    """The generic convention a translated task carries (``core.task.ProductConvention``):
    nothing outside this package knows Ploomber."""
    options = dict(info.export_options)
    if info.exporter:
        options["exporter_name"] = info.exporter
    return ProductConvention(upstream=dict(info.upstream),
                             strict_parameters=info.static_analysis == "strict",
                             source=source, notebook_product=info.nb, export_options=options)
