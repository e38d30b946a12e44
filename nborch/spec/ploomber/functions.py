"""Python functions in a Ploomber project: function tasks (run through a small generated
notebook), hooks (called in nborch's process) and computed values (``module::function`` in
``params`` or ``grid``, called when the pipeline is read, as Ploomber calls them when it
renders the pipeline)."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

_IMPORTS_PLOOMBER = re.compile(r"^\s*(?:import|from)\s+ploomber\b", re.M)
_STRICT_DOTTED = re.compile(r"[\w.]+::\w+")
COMPUTE_TIMEOUT = 300  # seconds for every computed value of a pipeline together


@dataclass(frozen=True)
class Function:
    """A top-level ``def`` found in a module's source (read, not imported)."""
    path: Path
    node: ast.FunctionDef | ast.AsyncFunctionDef
    digest: str  # sha256 of the function's own source (decorators included)


def module_file(module: str, root: Path) -> Path | None:
    relative = Path(*module.split("."))
    for candidate in (root / f"{relative}.py", root / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def locate(dotted: str, root: Path, where: str, problems: list[str]) -> Function | None:
    """The module file and the ``def`` of ``dotted`` (read, not imported)."""
    module, _, func = dotted.rpartition(".")
    path = module_file(module, root)
    if path is None:
        problems.append(f"{where}: cannot find module {module!r} of {dotted!r} (looked in "
                        f"{root} and the installed packages)")
        return None
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        problems.append(f"{where}: cannot read {path}: {exc}")
        return None
    check_imports(text, where, str(path), problems)
    found = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.name == func), None)
    if found is None:
        problems.append(f"{where}: {path} has no function {func!r} (a top-level def)")
        return None
    first = min([d.lineno for d in found.decorator_list] + [found.lineno])
    own = "\n".join(text.splitlines()[first - 1:found.end_lineno])
    return Function(path, found, hashlib.sha256(own.encode()).hexdigest())


def check_imports(code: str, where: str, path: str, problems: list[str]) -> None:
    if _IMPORTS_PLOOMBER.search(code) and importlib.util.find_spec("ploomber") is None:
        problems.append(f"{where}: {path} imports ploomber, which is not installed; nborch runs "
                        "Ploomber projects without Ploomber, so remove the import (or pip "
                        "install ploomber)")


def signature(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[str], list[str], bool]:
    """A def's argument names, those without a default, and whether it takes ``**kwargs``."""
    args = func.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    required = positional[:len(positional) - len(args.defaults)]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    return positional + [a.arg for a in args.kwonlyargs], required, args.kwarg is not None


def subscripts(func: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> list[str]:
    """The keys of ``name["KEY"]`` in a function's body: Ploomber's upstream declaration."""
    keys = [node.slice.value for node in ast.walk(func)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == name and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)]
    return list(dict.fromkeys(keys))


def call_problems(func: ast.FunctionDef, passed: list[str], where: str) -> list[str]:
    """Why calling ``func`` with the arguments Ploomber passes (``passed``) would fail."""
    accepted, required, var_kw = signature(func)
    problems = [f"{where}: {func.name}() takes no {a!r} argument, which Ploomber passes"
                for a in passed if a not in accepted and not var_kw]
    return problems + [f"{where}: {func.name}() needs {a!r}, which Ploomber does not pass"
                       + (" (the task has no upstream tasks: use upstream['NAME'] in the "
                          "function to declare one)" if a == "upstream" else "")
                       for a in required if a not in passed]


def function_notebook(dotted: str, found: Function, root: Path, passed: list[str]) -> dict:
    """The notebook a function task runs: a parameters cell, then the import and the call
    with Ploomber's arguments. Its text changes only when the function's own source does
    (what ``--incremental`` compares)."""
    module, _, name = dotted.rpartition(".")
    params = nbformat.v4.new_code_cell("\n".join(f"{a} = None" for a in passed),
                                       id="parameters")
    params.metadata["tags"] = ["parameters"]
    call = nbformat.v4.new_code_cell(
        f"# Ploomber function task {dotted} (source sha256 {found.digest[:16]})\n"
        f"import sys\nif {str(root)!r} not in sys.path:\n"
        f"    sys.path.insert(0, {str(root)!r})\n"
        f"from {module} import {name}\n"
        f"{name}({', '.join(f'{a}={a}' for a in passed)});", id="call")
    nb = nbformat.v4.new_notebook(cells=[params, call])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


# -- hooks --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PloomberHook:
    """A Ploomber ``on_finish``/``on_failure`` function, run in the orchestrating process
    with the arguments it asks for."""
    dotted: str
    root: str
    kwargs: dict
    wants: tuple
    given: dict

    def __call__(self, payload: dict) -> None:
        module, _, name = self.dotted.rpartition(".")
        if self.root not in sys.path:
            sys.path.insert(0, self.root)
        func = getattr(importlib.import_module(module), name)
        given = dict(self.given)
        if "report" in self.wants:  # a text summary, where Ploomber gives a Table
            given["report"] = (f"run {payload.get('run_id')} of {payload.get('pipeline')}: "
                               f"{payload.get('status')} ({payload.get('started_at')} - "
                               f"{payload.get('ended_at')})")
        if "traceback" in self.wants:
            given["traceback"] = {"build": "\n".join(
                f"{f['task']}: {(f['error'] or {}).get('type')}: "
                f"{(f['error'] or {}).get('message')}" for f in payload["failed_tasks"])}
        func(**self.kwargs, **{a: given[a] for a in self.wants})

    def render(self) -> str | None:
        """Call it as an ``on_render`` hook; why it failed, or None."""
        try:
            self({})
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def __str__(self) -> str:
        return self.dotted


class DagInfo:
    """What a hook asking for ``dag`` gets: like Ploomber's DAG, its ``name``, its task names
    (``list(dag)``, ``len(dag)``) and ``dag["NAME"]`` (with ``name``, ``product``,
    ``params``); not Ploomber's object."""

    def __init__(self, name: str):
        self.name = name
        self._tasks: dict = {}

    def add(self, task: Any) -> None:
        self._tasks[task.name] = task

    def __iter__(self):
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, name: str) -> Any:
        return self._tasks[name]

    def __repr__(self) -> str:
        return f'DAG("{self.name}")'


def make_hook(value: Any, root: Path, where: str, offered: tuple, given: dict,
              problems: list[str]) -> PloomberHook | None:
    """A Ploomber hook (``dotted.path`` or ``{dotted_path: ..., ARG: VALUE}``) as a callable
    nborch's python hooks call with their payload."""
    kwargs = {}
    if isinstance(value, dict):
        kwargs = {k: v for k, v in value.items() if k != "dotted_path"}
        value = value.get("dotted_path")
    if not isinstance(value, str) or "." not in value:
        problems.append(f"{where}: must be a dotted path to a function, such as "
                        "hooks.on_finish, or a mapping with 'dotted_path'")
        return None
    found = locate(value, root, where, problems)
    if found is None:
        return None
    accepted, required, _ = signature(found.node)
    wanted = [a for a in accepted if a not in kwargs]
    cannot = [a for a in wanted if a not in offered and a in required]
    if cannot:
        problems.append(f"{where}: {value}() asks for {', '.join(map(repr, cannot))}, which "
                        "nborch cannot pass (they are Ploomber objects); it can pass "
                        f"{', '.join(offered)}")
        return None
    return PloomberHook(value, str(root), kwargs, tuple(a for a in wanted if a in offered),
                        given)


# -- computed values ------------------------------------------------------------------------

def dotted_spec(value: Any) -> tuple[str, dict] | None:
    """``(module::function, kwargs)`` when ``value`` is one of Ploomber's computed values:
    ``"module::function"`` or ``{dotted_path: "module::function", ARG: VALUE}``."""
    if isinstance(value, dict) and isinstance(value.get("dotted_path"), str):
        dotted, kwargs = value["dotted_path"], {k: v for k, v in value.items()
                                                if k != "dotted_path"}
    elif isinstance(value, str):
        dotted, kwargs = value, {}
    else:
        return None
    if not _STRICT_DOTTED.fullmatch(dotted) or dotted.count("::") != 1:
        return None
    return dotted, kwargs


_CALL = r"""
import importlib, json, sys
root, out_path = sys.argv[1], sys.argv[2]
if root not in sys.path:
    sys.path.insert(0, root)
def plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "item") and not hasattr(v, "__len__"):  # a numpy scalar
        return plain(v.item())
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    raise TypeError(f"it returned a {type(v).__name__}, which nborch cannot pass to a "
                    "task: return plain data (numbers, text, lists, mappings)")
def values(v):  # a grid's values, as Ploomber expands them
    if isinstance(v, str) or not hasattr(v, "__iter__"):
        return [plain(v)]
    return [plain(x) for x in v]
out = []
for dotted, kwargs, grid in json.load(sys.stdin):
    module, _, name = dotted.replace("::", ".").rpartition(".")
    try:
        value = getattr(importlib.import_module(module), name)(**kwargs)
        if value is None:
            raise TypeError("it returned None; it must return a value")
        out.append({"value": values(value) if grid else plain(value)})
    except BaseException as exc:
        out.append({"error": f"{type(exc).__name__}: {exc}"})
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(out, f)
"""


def computed_values(tasks: list) -> dict[str, tuple]:
    """Every computed value of the (rendered) tasks, by ``value_key``: the values of a grid,
    or the ``params`` of a task without one (Ploomber computes a grid task's params not)."""
    calls = {}
    for item in tasks:
        if not isinstance(item, dict):
            continue
        found = []
        if "grid" in item:
            parts = item["grid"] if isinstance(item["grid"], list) else [item["grid"]]
            found += [(v, True) for part in parts if isinstance(part, dict)
                      for v in part.values()]
        elif isinstance(item.get("params"), dict):
            found += [(v, False) for v in item["params"].values()]
        for value, for_grid in found:
            spec = dotted_spec(value)
            if spec is not None:
                calls[value_key(value, for_grid)] = (*spec, for_grid)
    return calls


def value_key(value: Any, for_grid: bool) -> str:
    return json.dumps([value, for_grid], sort_keys=True, default=str)


def compute(calls: list[tuple[str, dict, bool]], root: Path) -> list[dict]:
    """Call each ``(module::function, kwargs, for_grid)`` in one fresh Python process (the
    pipeline's folder first on ``sys.path``, the current folder as it is): ``{"value": ...}``
    (plain data; a grid's values as a list) or ``{"error": "..."}`` each."""
    if not calls:
        return []
    fd, out_path = tempfile.mkstemp(suffix=".json", prefix="nborch-computed-")
    os.close(fd)
    try:
        proc = subprocess.run([sys.executable, "-c", _CALL, str(root), out_path],
                              input=json.dumps(calls, default=str), capture_output=True, text=True,
                              timeout=COMPUTE_TIMEOUT)
        text = Path(out_path).read_text(encoding="utf-8")
        if proc.returncode != 0 or not text:
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            return [{"error": f"the process calling it failed: {tail[0]}"}] * len(calls)
        return json.loads(text)
    except subprocess.TimeoutExpired:
        return [{"error": f"calling it took more than {COMPUTE_TIMEOUT}s"}] * len(calls)
    except (OSError, ValueError) as exc:
        return [{"error": f"{type(exc).__name__}: {exc}"}] * len(calls)
    finally:
        os.unlink(out_path)
