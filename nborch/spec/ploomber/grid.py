"""Ploomber's grids: the combinations of a ``grid`` (a mapping or a list of them), and each
instance's name and products, with ``[[placeholders]]`` replaced by its values.

As in Ploomber 0.23: a single value is a one-element list (a string too; a mapping gives
its keys, as iterating it does); ``name: fit-`` names the instances ``fit-0``, ``fit-1``, ...
and ``name: fit-[[alpha]]`` names each from its values; every product gets ``-0``, ``-1``,
... before its extension (all its suffixes: ``m.tar.gz`` → ``m-0.tar.gz``) and then its
``[[placeholders]]`` replaced. A placeholder renders as Jinja2 renders a value (``str()``;
an undefined one renders empty), with the grid's values and the task's ``params``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

# The sandbox (the pipeline file is data); ``[[ ]]`` for values, and an undefined name
# renders empty, as Ploomber's jinja2.Template does.
_BRACKETS = SandboxedEnvironment(variable_start_string="[[", variable_end_string="]]",
                                 autoescape=False)


def has_placeholders(text: str) -> bool:
    return "[[" in text and "]]" in text


def render_brackets(text: str, values: dict) -> str:
    """``text`` with its ``[[placeholders]]`` replaced; raises ``jinja2.TemplateError``."""
    if "[[" not in text and "{%" not in text and "{#" not in text:
        return text
    try:
        return _BRACKETS.from_string(text).render(**values)
    except jinja2.TemplateError:
        raise
    except Exception as exc:  # an error of the expression itself: [[ 1 / 0 ]]
        raise jinja2.TemplateRuntimeError(f"{type(exc).__name__}: {exc}") from None


def values_of(value: Any) -> list:
    """A grid parameter's values, as Ploomber expands them."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, dict, set)):
        return [value]
    return list(value)


def expand(grid: Any, where: str,
           computed: Callable[[Any], list | None]) -> tuple[list[dict], list[str]]:
    """Each mapping of ``grid`` (a mapping or a list of them) as ``{parameter: values}``, and
    the problems found. ``computed(value)`` is a computed value's values (a list), or None
    for any other value."""
    parts = grid if isinstance(grid, list) else [grid]
    problems, expanded = [], []
    for part in parts:
        if not isinstance(part, dict):
            problems.append(f"{where}: 'grid' must be a mapping from parameter names to values "
                            f"(or a list of them), such as {{alpha: [1, 2]}}, not {part!r}")
            continue
        lists = {}
        for key, value in part.items():
            values = computed(value)
            lists[key] = values_of(value) if values is None else values
        expanded.append(lists)
    return expanded, problems


def combinations(expanded: list[dict]) -> list[dict]:
    """Each mapping's Cartesian product (the last parameter varying fastest), the mappings
    one after the other."""
    return [dict(zip(lists, combo)) for lists in expanded
            for combo in itertools.product(*lists.values())]


def instance_name(name: str, index: int, values: dict) -> str:
    """``NAME`` + index, or ``NAME`` with its ``[[placeholders]]`` replaced."""
    return render_brackets(name, values) if has_placeholders(name) else f"{name}{index}"


def instance_path(path: str, index: int, values: dict) -> str:
    """A product path of instance ``index``: ``-index`` before all its suffixes, then its
    ``[[placeholders]]`` replaced (Ploomber's order: a value's dots are not suffixes)."""
    p = Path(path)
    suffix = "".join(p.suffixes)
    stem = p.name.replace(suffix, "")
    return render_brackets(str(p.parent / f"{stem}-{index}{suffix}"), values)


def group_name(name: str, stem: str) -> str:
    """The name nborch shows for the whole grid: ``name`` before its first placeholder (or
    the source's stem when that is empty)."""
    head = name.split("[[", 1)[0]
    return head if head.strip("-_.") else stem


def map_paths(product: Any, change: Callable[[str], str]) -> Any:
    """``product`` (a path, or a mapping of names to paths) with ``change`` applied to each."""
    if isinstance(product, dict):
        return {k: change(v) for k, v in product.items()}
    return change(product)
