"""Reading task notebooks: parameters cell, kernel, declared upstream. Cached by mtime.

A task's notebook is an ``.ipynb`` file or a ``.py`` script in a jupytext format (percent
``# %%`` cells or light), read with jupytext; its parameters cell is the one tagged
``parameters`` (``# %% tags=["parameters"]``).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nbformat

from ..core.errors import ValidationError

_NO_LITERAL = object()


@dataclass(frozen=True)
class Parameter:
    name: str
    default_source: str
    default: Any  # the default's value when it is a literal, else _NO_LITERAL

    @property
    def has_literal_default(self) -> bool:
        return self.default is not _NO_LITERAL


@dataclass(frozen=True)
class NotebookInfo:
    path: Path
    has_parameters_cell: bool
    parameters: dict  # name -> Parameter (empty when the language cannot be inspected)
    kernel_name: str | None
    language: str | None
    source_hash: str = ""  # of the cells' types and sources, not outputs, metadata, injected cells

    @property
    def declared_upstream(self) -> list[str] | None:
        """``upstream = ["a", "b"]`` in the parameters cell, as Ploomber users write it (or
        Ploomber's older ``upstream = {"a": None}``)."""
        param = self.parameters.get("upstream")
        if param and isinstance(param.default, (list, tuple, dict)) and \
                all(isinstance(u, str) for u in param.default):
            return list(param.default)
        return None


SCRIPT_SUFFIXES = (".py",)


def is_script(path: Path | str) -> bool:
    return str(path).endswith(SCRIPT_SUFFIXES)


def looks_like_script_notebook(path: Path) -> bool:
    """A ``.py`` file of a folder pipeline is a task only when jupytext would recognise it
    as a notebook on sight (a jupytext header or ``# %%`` cells): helper modules are not."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:20000]
    except OSError:
        return False
    return "jupytext:" in head[:2000] or any(line.startswith("# %%")
                                             for line in head.splitlines())


def _read_script(path: Path) -> nbformat.NotebookNode:
    try:
        import jupytext
    except ImportError:
        raise ValidationError(f"{path} is a script notebook: reading it needs jupytext "
                              "(pip install jupytext)") from None
    try:
        return jupytext.read(path)
    except FileNotFoundError:
        raise ValidationError(f"notebook not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read notebook {path}: {exc}") from None
    except Exception as exc:  # jupytext's assorted parse errors
        raise ValidationError(f"{path} is not a notebook jupytext can read: {exc}") from None


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook (``.ipynb``, or a jupytext ``.py`` script), raising
    ValidationError naming the file."""
    if is_script(path):
        nb = _read_script(Path(path))
        nb.metadata.setdefault("kernelspec", {}).setdefault("name", "python3")
        nb.metadata.kernelspec.setdefault("language", "python")
        nb.metadata.kernelspec.setdefault("display_name", nb.metadata.kernelspec["name"])
        return nb
    try:
        with open(path, encoding="utf-8") as fh:
            nb = nbformat.read(fh, as_version=4)
    except FileNotFoundError:
        raise ValidationError(f"notebook not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read notebook {path}: {exc}") from None
    except (json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise ValidationError(f"{path} is not a valid notebook (not JSON: {exc})") from None
    except Exception as exc:  # nbformat raises assorted errors for malformed documents
        raise ValidationError(f"{path} is not a valid notebook: {exc}") from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise ValidationError(f"{path} is not a valid notebook (nbformat: {exc.message})") from None
    return nb


def parameters_cell_index(nb: nbformat.NotebookNode) -> int:
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return index
    return -1


def inspect_notebook(path: Path) -> NotebookInfo:
    path = Path(path)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise ValidationError(f"notebook not found: {path}") from None
    except OSError as exc:
        raise ValidationError(f"cannot read notebook {path}: {exc}") from None
    return _inspect(path, mtime)


@lru_cache(maxsize=4096)
def _inspect(path: Path, mtime: int) -> NotebookInfo:
    return inspect_node(read_notebook(path), path)


def inspect_node(nb: nbformat.NotebookNode, path: Path) -> NotebookInfo:
    """What ``inspect_notebook`` tells of a notebook already in memory (``path`` names it)."""
    spec = nb.metadata.get("kernelspec", {}) or {}
    language = (nb.metadata.get("language_info", {}) or {}).get("name") or spec.get("language")
    index = parameters_cell_index(nb)
    params: dict[str, Parameter] = {}
    if index >= 0 and (language in (None, "python")):
        params = _python_parameters(nb.cells[index].source)
    return NotebookInfo(path=path, has_parameters_cell=index >= 0, parameters=params,
                        kernel_name=spec.get("name"), language=language,
                        source_hash=_source_hash(nb))


def _source_hash(nb: nbformat.NotebookNode) -> str:
    import hashlib
    cells = [[c.cell_type, c.source] for c in nb.cells
             if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    return hashlib.sha256(json.dumps(cells).encode("utf-8")).hexdigest()


def _python_parameters(source: str) -> dict[str, Parameter]:
    """Names assigned at the top level of a Python parameters cell, with literal defaults."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    params = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        src = ast.get_source_segment(source, value) or ""
        try:
            default = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default = _NO_LITERAL
        for target in targets:
            if isinstance(target, ast.Name):
                params[target.id] = Parameter(target.id, src, default)
    return params


def type_mismatch(default: Any, value: Any) -> bool:
    """True when ``value`` clearly has another type than the parameter's default."""
    if default is None or value is None:
        return False
    if isinstance(default, bool) or isinstance(value, bool):
        return type(default) is not type(value)
    numbers = (int, float)
    if isinstance(default, numbers):
        return not isinstance(value, numbers)
    for kind in (str, dict):
        if isinstance(default, kind):
            return not isinstance(value, kind)
    if isinstance(default, (list, tuple)):
        return not isinstance(value, (list, tuple))
    return False


def type_name(value: Any) -> str:
    """``value``'s kind with its article, for messages: 'an integer', 'a list'."""
    return {list: "a list", tuple: "a list", dict: "a mapping", str: "a string",
            bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), f"a {type(value).__name__}")
