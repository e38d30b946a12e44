"""A task: one notebook or command of a pipeline, as a frozen value, and the rules its
options, products and names obey (whatever format they were written in).

``ProductConvention`` is what an import format may ask of a task beyond nborch's own shape
(Ploomber's projects pass products rather than values); nborch's own tasks have none.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clock import parse_duration
from .pools import pool_name_problem

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")  # use fullmatch: "$" would let "a\n" through
TRIGGERS = ("all_success", "all_done", "one_failed")
BACKOFFS = ("constant", "exponential")

# Options a task may set itself or inherit from the pipeline's defaults, with their defaults.
TASK_DEFAULTS: dict[str, Any] = {
    "retries": 0,
    "retry_delay": 10.0,
    "retry_backoff": "constant",
    "max_retry_delay": 3600.0,
    "timeout": None,
    "kernel": None,
    "trigger": "all_success",
    "cwd": None,
    "env": {},
    "secrets": (),
    "resources": {},
    "pool": None,
}
DURATION_OPTIONS = ("retry_delay", "max_retry_delay", "timeout")
MAX_GRID = 10_000  # instances of one grid, unless allow_large_grid


@dataclass(frozen=True)
class ProductConvention:
    """A task that passes products rather than values (Ploomber's convention).

    Its notebook gets ``upstream[key]``: the product of the upstream task the key names (for
    a tuple of names, a wildcard's matches: a mapping of each name to its product), and
    ``product``, its own, injected even when undeclared, as the last parameter. Its own
    ``upstream = [...]`` adds no edges (the import format already read it), a ``upstream``
    parameter is injected only when there are upstream tasks, and a success that leaves a
    declared product missing fails.
    """
    upstream: dict = field(default_factory=dict)  # key -> task name, or tuple of task names
    strict_parameters: bool = False  # else parameters the notebook does not declare go in anyway
    source: dict | None = None  # a generated notebook (nbformat dict), run instead of a file
    notebook_product: str | None = None  # the product the executed notebook is also written to
    export_options: dict = field(default_factory=dict)  # nbconvert's, with ``exporter_name``

    def upstream_products(self, product_of: Callable[[str], Any]) -> dict:
        """``upstream`` as the notebook gets it, ``product_of(task name)`` each."""
        return {key: product_of(names) if isinstance(names, str)
                else {name: product_of(name) for name in names}
                for key, names in self.upstream.items()}

    def job_options(self, products: dict) -> dict:
        """What an attempt of such a task needs beyond a notebook task's (``AttemptJob``)."""
        return {"source": self.source, "export_options": dict(self.export_options),
                "notebook_product": products.get(self.notebook_product)
                if self.notebook_product else None, "check_products": True}


@dataclass(frozen=True)
class Task:
    name: str
    notebook: Path | None  # None for a command task
    upstream: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)
    retries: int = 0
    retry_delay: float = 10.0
    retry_backoff: str = "constant"
    max_retry_delay: float = 3600.0
    timeout: float | None = None
    kernel: str | None = None
    trigger: str = "all_success"
    cwd: Path | None = None
    env: dict = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    resources: dict = field(default_factory=dict)  # Dask worker resources, e.g. {"GPU": 1}
    pool: str | None = None  # at most the pool's slots of its tasks run at once, store-wide
    grid: str | None = None  # the grid this task is an instance of
    hooks: dict = field(default_factory=dict)  # core.hooks.TASK_EVENTS -> (Hook, ...)
    command: tuple[str, ...] | None = None  # argv templates of a command task (no shell)
    product: str | dict | None = None  # declared output(s): a path template or name -> template
    product_convention: ProductConvention | None = None  # set by an import format only

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 is the first retry)."""
        delay = self.retry_delay
        if self.retry_backoff == "exponential":
            delay = self.retry_delay * 2 ** (attempt - 2)
        return min(delay, self.max_retry_delay)

    @property
    def workdir(self) -> Path:
        """Where the task runs: its notebook's folder (a command: the pipeline's folder, set
        as ``cwd`` when the task is made) unless ``cwd`` says otherwise."""
        if self.cwd is not None:
            return self.cwd
        assert self.notebook is not None, "a command task is made with a cwd"
        return self.notebook.parent


def normalize_options(options: dict, where: str) -> tuple[dict, list[str]]:
    """Check and convert task options (durations to seconds, lists to tuples).

    Returns the converted options and a list of problems, each naming ``where``.
    """
    out, problems = {}, []
    for key, value in options.items():
        try:
            if key in DURATION_OPTIONS:
                value = None if value is None else parse_duration(value)
            elif key == "retries":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"retries must be a whole number >= 0, not {value!r}")
            elif key == "trigger" and value not in TRIGGERS:
                raise ValueError(f"unknown trigger {value!r}; use one of {', '.join(TRIGGERS)}")
            elif key == "retry_backoff" and value not in BACKOFFS:
                raise ValueError(f"unknown retry_backoff {value!r}; "
                                 f"use one of {', '.join(BACKOFFS)}")
            elif key == "secrets":
                if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
                        not all(isinstance(v, str) for v in value):
                    raise ValueError("secrets must be a list of environment variable names, "
                                     f"not {value!r}")
                value = tuple(value)
            elif key == "env":
                if not isinstance(value, dict):
                    raise ValueError(f"env must be a mapping of names to values, not {value!r}")
                value = {str(k): str(v) for k, v in value.items()}
                if any(has_nul(k) or has_nul(v) for k, v in value.items()):
                    raise ValueError("env names and values cannot contain a NUL byte")
            elif key == "resources":
                if not isinstance(value, dict) or not all(
                        isinstance(k, str) and isinstance(v, (int, float))
                        and not isinstance(v, bool) and v > 0 for k, v in value.items()):
                    raise ValueError("resources must map resource names to positive numbers, "
                                     f"such as {{GPU: 1}}, not {value!r}")
                value = dict(value)
            elif key == "pool" and value is not None and (problem := pool_name_problem(value)):
                raise ValueError(problem)
            elif key == "kernel" and value is not None and not isinstance(value, str):
                raise ValueError(f"kernel must be a kernel name, not {value!r}")
            elif key == "cwd" and value is not None:
                if not isinstance(value, (str, Path)) or has_nul(value):
                    raise ValueError(f"cwd must be a folder path, not {str(value)!r}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        out[key] = value
    return out, problems



RESERVED_PRODUCTS = ("notebook", "values")  # keys ``upstream[task]`` already has


def check_product(product: Any, where: str) -> list[str]:
    """Problems with a ``product`` declaration: a path, or a mapping of names to paths."""
    if isinstance(product, str) and product:
        return [f"{where}: product path {product!r} contains a NUL byte"] if has_nul(product) \
            else []
    if not isinstance(product, dict) or not product:
        return [f"{where}: 'product' must be a path or a mapping of names to paths, "
                f"not {product!r}"]
    problems = []
    for key, path in product.items():
        if key in RESERVED_PRODUCTS:
            problems.append(f"{where}: a product cannot be named {key!r}: upstream[task] "
                            f"already has {key!r}; rename it")
        elif not isinstance(key, str) or not key:
            problems.append(f"{where}: product name {key!r} must be a non-empty string")
        if not isinstance(path, str) or not path:
            problems.append(f"{where}: product {key!r} must be a path, not {path!r}")
        elif has_nul(path):
            problems.append(f"{where}: product path {path!r} contains a NUL byte")
    return problems


def is_parameter_name(name: Any) -> bool:
    """A parameter name becomes code in the cell papermill injects (``NAME = value``), so it
    must be a plain identifier: ``a=1; import os`` as a name would run."""
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def parameter_name_problems(names: Iterable, where: str) -> list[str]:
    return [f"{where}: parameter name {name!r} is not a Python identifier (letters, digits and "
            "'_', not starting with a digit, not a keyword such as 'class')"
            for name in names if not is_parameter_name(name)]


def has_nul(path: Any) -> bool:
    """A NUL byte in a path: the operating system cannot open it (Python raises ValueError),
    so it is refused as bad input first."""
    return isinstance(path, (str, Path)) and "\0" in str(path)


def check_task_name(name: Any, where: str) -> str | None:
    """A problem with a task name, or None."""
    if not isinstance(name, str) or not name:
        return f"{where}: task name must be a non-empty string, not {name!r}"
    if "/" in name or "\\" in name or ".." in name:
        return f"{where}: task name {name!r} must not contain a path separator or '..'"
    if not NAME_RE.fullmatch(name):
        return f"{where}: task name {name!r} may only use letters, digits, '_', '.' and '-'"
    return None

