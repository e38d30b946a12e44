"""Ploomber projects: a Ploomber ``pipeline.yaml`` (and its ``env.yaml``) read into a Pipeline.

Ploomber's repository was archived in 2025; its projects run here unchanged (SPEC 1.6). This
module only translates: each task becomes an nborch notebook task that carries a
``PloomberTask``, and the few places that behave differently for such a task read it:
``validate.prepare`` (relaxed parameter checks, ``product`` always injected), the engine
(``upstream`` in Ploomber's shape) and the attempt (the executed notebook also written to the
``nb`` product, as HTML when it ends in ``.html``).

Ploomber's rules followed here, checked against Ploomber 0.23.3:

- task names default to the source's file stem (a function's name for a dotted path);
- the kernel runs in the pipeline's folder (``local_execution: true``: the notebook's);
- products are relative to the pipeline's folder and reach the task as absolute paths;
- ``upstream["get"]`` is that task's product (a path, or a mapping of names to paths); a
  wildcard ``upstream = ["fit-*"]`` gives ``upstream["fit-*"] == {"fit-0": ..., ...}``;
- a grid's instances are named ``NAME`` + ``0``, ``1``, ... (``name: fit-`` gives ``fit-0``),
  each product gets ``-0``, ``-1``, ... before its extension, and ``[[param]]`` in a product
  path is replaced by that instance's value;
- placeholders ``{{here}}``, ``{{cwd}}``, ``{{root}}``, ``{{user}}``, ``{{now}}`` and the keys
  of ``env.yaml`` (``env.NAME.yaml`` for ``pipeline.NAME.yaml``) are rendered in every value.
"""

from __future__ import annotations

import ast
import fnmatch
import getpass
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import nbformat

from ..core.errors import SpecError
from ..core.model import (TASK_DEFAULTS, GridInstances, Pipeline, Task, check_task_name,
                          grid_combinations, has_nul, parameter_name_problems)
from .notebooks import NotebookInfo, inspect_node, read_notebook
from .templating import render, template_error

# Keys of a Ploomber pipeline.yaml; those that only tune Ploomber itself are accepted and
# have no effect here (nborch runs tasks in parallel, with papermill and nbconvert defaults).
PIPELINE_KEYS = ("tasks", "meta", "executor", "on_finish", "on_failure")
META_KEYS = ("extract_upstream", "extract_product", "product_relative_to_source",
             "product_default_class", "jupyter_hot_reload", "jupyter_functions_as_notebooks")
TASK_KEYS = ("source", "product", "name", "params", "grid", "upstream", "on_finish",
             "on_failure", "static_analysis", "local_execution", "kernelspec_name",
             "papermill_params", "nbconvert_export_kwargs", "nbconvert_exporter_name",
             "check_if_kernel_installed", "debug_mode", "ext_in", "class", "product_class",
             # nborch's own task options work too (Ploomber would reject them)
             *(k for k in TASK_DEFAULTS if k != "cwd"))
# What nborch does not run, and why: a validation error naming the task.
UNSUPPORTED = {
    "clients": "database clients (SQL tasks and products) are Ploomber objects nborch does not "
               "create; run the SQL from a notebook or a command task instead",
    "client": "database clients are Ploomber objects nborch does not create",
    "product_client": "product clients (metadata kept in a database or a bucket) are Ploomber "
                      "objects nborch does not create",
    "serializer": "serializers pass Python objects between function tasks inside Ploomber's "
                  "process; nborch runs each task in a fresh kernel, so write the product to "
                  "its path in the function instead",
    "unserializer": "unserializers pass Python objects between function tasks inside "
                    "Ploomber's process; read upstream products from their paths instead",
    "on_render": "nborch has no render step; use on_finish/on_failure",
    "location": "pipelines built by a Python factory are not read by nborch; list the tasks "
                "in pipeline.yaml",
    "config": "DAG configuration is Ploomber's own; remove it",
    "source_loader": "sources loaded from an installed package are not supported; give paths "
                     "relative to pipeline.yaml",
    "import_tasks_from": "tasks imported from another file are not supported; list them in "
                         "pipeline.yaml",
}
NOTEBOOK_SUFFIXES = (".ipynb", ".py")
FILE_SUFFIXES = (".sql", ".sh", ".r", ".rmd", ".ipynb", ".py")  # a source, not a dotted path
NB_FORMATS = (".ipynb", ".html")  # what the ``nb`` product of a notebook task may be
STATIC_ANALYSIS = {"regular": "regular", "strict": "strict", "disable": "disable",
                   True: "regular", False: "disable", "disabled": "disable"}
TASK_HOOK_ARGS = ("task", "product", "params")
PIPELINE_HOOK_ARGS = ("traceback",)
_GRID_PLACEHOLDER = re.compile(r"\[\[\s*([A-Za-z_]\w*)\s*\]\]")
_IMPORTS_PLOOMBER = re.compile(r"^\s*(?:import|from)\s+ploomber\b", re.M)


@dataclass(frozen=True)
class PloomberTask:
    """What makes a task keep Ploomber's conventions (see the module's docstring)."""
    upstream: dict = field(default_factory=dict)  # key in `upstream` -> task name, or a tuple
    #                                               of task names for a wildcard key
    nb: str | None = None          # product key of the executed notebook ("nb" or "product")
    static_analysis: str = "regular"
    export_options: dict = field(default_factory=dict)  # nbconvert_export_kwargs
    function: str | None = None    # dotted path of a function task
    source: dict | None = None     # the notebook generated for a function task


def looks_like_ploomber(data: Any) -> bool:
    """A Ploomber spec: a list of tasks with ``source``, or a mapping whose ``tasks`` is one."""
    tasks = data.get("tasks") if isinstance(data, dict) else data
    return isinstance(tasks, list) and any(isinstance(t, dict) and "source" in t for t in tasks)


def injected_upstream(task: Task, product_of: Callable[[str], Any]) -> dict:
    """The ``upstream`` a Ploomber task gets: each upstream task's product (a wildcard key:
    a mapping of the matching tasks' names to their products)."""
    return {key: product_of(names) if isinstance(names, str)
            else {name: product_of(name) for name in names}
            for key, names in task.ploomber.upstream.items()}


def ploomber_job(info: PloomberTask, products: dict) -> dict:
    """What an ``AttemptJob`` of a Ploomber task has beyond a notebook task's."""
    return {"source": info.source, "notebook_product": products.get(info.nb) if info.nb else None,
            "export_options": info.export_options, "check_products": True}


def parameter_problems(who: str, task: Task, info: NotebookInfo, values: dict) -> list[str]:
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


# -- reading a Ploomber spec ----------------------------------------------------------------

def load(data: Any, source: Path, *, allow_large_grid: bool = False) -> Pipeline:
    """A Pipeline from a parsed Ploomber spec; raises SpecError listing every problem."""
    return _Reader(source, allow_large_grid).read(data)


@dataclass
class _Draft:
    """A task read from the spec, before its upstream names are known."""
    name: str
    notebook: Path
    where: str
    params: dict
    product: Any
    upstream_keys: list
    options: dict
    ploomber: PloomberTask
    hooks: dict
    instances: list | None = None  # [(name, params, product)] of a grid
    func: Any = None               # a function task's ast.FunctionDef
    module_hash: str = ""          # of a function task's module source

    @property
    def names(self) -> list[str]:
        return [i[0] for i in self.instances] if self.instances else [self.name]


class _Reader:
    def __init__(self, source: Path, allow_large_grid: bool):
        self.source = Path(source).resolve()
        self.root = self.source.parent
        self.allow_large_grid = allow_large_grid
        self.problems: list[str] = []

    def read(self, data: Any) -> Pipeline:
        if isinstance(data, list):
            data = {"tasks": data}
        self._unknown(data, PIPELINE_KEYS, "pipeline")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            self.problems.append("pipeline: 'meta' must be a mapping")
            meta = {}
        self._unknown(meta, META_KEYS, "meta")
        if meta.get("extract_product"):
            self.problems.append("meta: extract_product is not supported; declare each task's "
                                 "'product' in pipeline.yaml")
        self.extract_upstream = meta.get("extract_upstream", True) is not False
        self.relative_to_source = bool(meta.get("product_relative_to_source", False))
        context = self._context()
        try:
            tasks = render(data.get("tasks"), context)
        except Exception as exc:  # jinja2 errors of every kind
            tasks = []
            self.problems.append(f"tasks: {_placeholder_error(exc, self.env_path)}")
        if not isinstance(tasks, list) or not tasks:
            self.problems.append("pipeline: 'tasks' must be a list of tasks with 'source' "
                                 "and 'product'")
            tasks = []
        drafts = [d for n, item in enumerate(tasks) if (d := self._draft(item, n)) is not None]
        pipeline = Pipeline(_pipeline_name(self.source), source=self.source,
                            allow_large_grid=self.allow_large_grid,
                            **self._pipeline_hooks(data, context))
        if not self.problems:
            self._add(pipeline, drafts)
        if self.problems:
            raise SpecError(list(dict.fromkeys(self.problems)), source=str(self.source))
        return pipeline

    # -- the whole spec ------------------------------------------------------------------

    def _unknown(self, mapping: Any, allowed: tuple, where: str) -> None:
        import difflib
        if not isinstance(mapping, dict):
            return
        for key in mapping:
            if key in UNSUPPORTED and mapping[key] is None:
                continue  # e.g. `serializer: null`, which turns a pipeline-wide one off
            if key in UNSUPPORTED:
                self.problems.append(f"{where}: {key!r} is not supported: {UNSUPPORTED[key]}")
            elif key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.problems.append(f"{where}: unknown key {key!r}{hint}")

    def _context(self) -> dict:
        """Ploomber's default placeholders, then the keys of the env file."""
        root = next((p for p in [self.root, *self.root.parents] if (p / "setup.py").is_file()),
                    self.root)
        defaults = {"here": str(self.root), "cwd": os.getcwd(), "root": str(root),
                    "user": getpass.getuser(),
                    "now": datetime.now().isoformat(timespec="seconds")}
        self.env_path = _env_path(self.source)
        if self.env_path is None:
            return defaults
        from .loader import parse_yaml_text
        try:
            env = parse_yaml_text(self.env_path.read_text(encoding="utf-8"), str(self.env_path))
        except SpecError as exc:
            self.problems += exc.problems
            return defaults
        except OSError as exc:
            self.problems.append(f"cannot read {self.env_path}: {exc}")
            return defaults
        if env is None:
            return defaults
        if not isinstance(env, dict):
            self.problems.append(f"{self.env_path}: must be a mapping of names to values")
            return defaults
        try:
            env = render(dict(env), defaults)  # env.yaml may use the defaults ({{here}}/data)
        except Exception as exc:
            self.problems.append(f"{self.env_path.name}: {_placeholder_error(exc, None)}")
            return defaults
        return {**defaults, **env}

    def _pipeline_hooks(self, data: dict, context: dict) -> dict:
        hooks = {}
        for key, event in (("on_finish", "on_success"), ("on_failure", "on_failure")):
            if data.get(key):
                try:
                    value = render(data[key], context)
                except Exception as exc:
                    self.problems.append(f"pipeline: {key}: {_placeholder_error(exc, None)}")
                    continue
                hook = self._hook(value, f"pipeline: {key}", PIPELINE_HOOK_ARGS, {})
                if hook is not None:
                    hooks[event] = [hook]
        return hooks

    # -- one task ------------------------------------------------------------------------

    def _draft(self, item: Any, index: int) -> _Draft | None:
        where = f"task {index + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("source"), str):
            self.problems.append(f"{where}: must be a mapping with 'source' (a notebook, a "
                                 "script or a dotted path to a function) and 'product'")
            return None
        src = item["source"]
        where = f"task {item.get('name') or src!r}"
        if has_nul(src):
            self.problems.append(f"{where}: source {src!r} contains a NUL byte")
            return None
        before = len(self.problems)
        self._unknown(item, TASK_KEYS, where)
        kind = self._kind(src, item, where)
        product = item.get("product")
        if product is None:
            self.problems.append(f"{where}: missing 'product' (the file(s) the task writes)")
        elif not (isinstance(product, str) and product) and not (
                isinstance(product, dict) and product
                and all(isinstance(v, str) and v for v in product.values())):
            self.problems.append(f"{where}: 'product' must be a path or a mapping of names to "
                                 f"paths, not {product!r} (SQL relations are not supported)")
        params = item.get("params") or {}
        if not isinstance(params, dict):
            self.problems.append(f"{where}: 'params' must be a mapping")
        else:  # each name becomes `NAME = value` in the injected cell (and a function call)
            self.problems += parameter_name_problems(
                (k for k in params if k != "resources_"), where)
        if len(self.problems) > before or kind is None:
            return None
        params = {k: v for k, v in params.items() if k != "resources_"}  # Ploomber's own
        static = STATIC_ANALYSIS.get(item.get("static_analysis", "regular"))
        if static is None:
            self.problems.append(f"{where}: static_analysis must be regular, strict or disable")
        options = {k: item[k] for k in TASK_DEFAULTS if k in item}
        if item.get("kernelspec_name"):
            options.setdefault("kernel", item["kernelspec_name"])
        if kind == "function":
            draft = self._function(src, item, where, params, product, static, options)
        else:
            draft = self._notebook(src, item, where, params, product, static, options)
        if draft is not None and item.get("grid") is not None:
            draft.instances = self._grid(item["grid"], draft, where)
        return draft

    def _kind(self, src: str, item: dict, where: str) -> str | None:
        cls = item.get("class")
        suffix = Path(src).suffix.lower()
        if suffix in NOTEBOOK_SUFFIXES:
            kind = "notebook"
        elif suffix not in FILE_SUFFIXES and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", src):
            kind = "function"
        elif suffix == ".sql":
            self.problems.append(f"{where}: SQL tasks ({src}) are not run by nborch: they need "
                                 "Ploomber's database clients; run the query from a notebook "
                                 "or a command task (e.g. your database's CLI)")
            return None
        else:
            self.problems.append(f"{where}: source {src!r} is not a task nborch runs (it runs "
                                 "notebooks, .py scripts and dotted paths to Python functions; "
                                 "a shell script can be a command task)")
            return None
        expected = {"notebook": "NotebookRunner", "function": "PythonCallable"}[kind]
        if cls is not None and cls != expected:
            self.problems.append(f"{where}: task class {cls!r} is not run by nborch (it runs "
                                 "NotebookRunner and PythonCallable tasks)")
            return None
        if item.get("product_class", "File") != "File":
            self.problems.append(f"{where}: product_class {item['product_class']!r} is not "
                                 "supported; products are files")
            return None
        return kind

    def _notebook(self, src, item, where, params, product, static, options) -> _Draft | None:
        path = (self.root / src).resolve()
        name = item.get("name") or path.stem
        try:
            nb = read_notebook(path)
        except SpecError as exc:
            self.problems += [f"{where}: {p}" for p in exc.problems]
            return None
        self._check_imports("\n".join(c.source for c in nb.cells if c.cell_type == "code"),
                            where, str(path))
        if isinstance(product, dict):
            if "nb" not in product:
                self.problems.append(f"{where}: 'product' has no 'nb' key: a notebook task "
                                     "needs one, the path of its executed notebook")
                return None
            nb_key = "nb"
        else:
            nb_key = "product"
        nb_path = product if isinstance(product, str) else product["nb"]
        if not nb_path.lower().endswith(NB_FORMATS):
            self.problems.append(f"{where}: the executed notebook {nb_path!r} must end in "
                                 f"{' or '.join(NB_FORMATS)} (nborch saves it as a notebook or "
                                 "exports it as HTML)")
            return None
        keys = []
        if self.extract_upstream:
            keys = inspect_node(nb, path).declared_upstream or []
        export = item.get("nbconvert_export_kwargs") or {}
        if not isinstance(export, dict):
            self.problems.append(f"{where}: nbconvert_export_kwargs must be a mapping")
            export = {}
        if item.get("local_execution"):
            options["cwd"] = str(path.parent)
        info = PloomberTask(nb=nb_key, static_analysis=static, export_options=dict(export))
        return self._make(name, path, where, params, product, keys, item, options, info)

    def _function(self, src, item, where, params, product, static, options) -> _Draft | None:
        found = self._locate(src, where)
        if found is None:
            return None
        module_path, func, module_hash = found
        name = item.get("name") or src.rsplit(".", 1)[1]
        keys = _subscripts(func, "upstream") if self.extract_upstream else []
        info = PloomberTask(static_analysis=static, function=src)
        draft = self._make(name, module_path, where, params, product, keys, item, options, info)
        if draft is not None:
            draft.func, draft.module_hash = func, module_hash
        return draft

    def _make(self, name, path, where, params, product, keys, item, options, info) -> _Draft | None:
        problem = check_task_name(name, where)
        if problem:
            self.problems.append(f"{problem}; give the task a 'name:' nborch accepts")
            return None
        explicit = item.get("upstream") or []
        explicit = [explicit] if isinstance(explicit, str) else explicit
        if not isinstance(explicit, list) or not all(isinstance(u, str) for u in explicit):
            self.problems.append(f"{where}: 'upstream' must be a task name or a list of them")
            explicit = []
        if self.relative_to_source:
            product = _map_paths(product, lambda p: str(path.parent / p))
        options.setdefault("cwd", str(self.root))
        hooks = {}
        for key, event in (("on_finish", "on_success"), ("on_failure", "on_failure")):
            if item.get(key):
                hooks[event] = item[key]
        return _Draft(name, path, where, dict(params), product, list(dict.fromkeys(
            keys + explicit)), options, info, hooks)

    def _grid(self, grid: Any, draft: _Draft, where: str) -> list | None:
        """Ploomber's instances: ``NAME0``, ``NAME1``, ... with ``-0``, ``-1``, ... added to each
        product's file name and ``[[param]]`` replaced by the instance's value."""
        combinations = []
        try:
            for part in grid if isinstance(grid, list) else [grid]:
                combinations += grid_combinations(part, where, self.allow_large_grid)
        except SpecError as exc:
            self.problems += exc.problems
            return None
        instances = []
        for i, combination in enumerate(combinations):
            def instance_path(path: str, i=i, combination=combination) -> str:
                def value(match):
                    if match.group(1) not in combination:
                        raise KeyError(match.group(1))
                    return str(combination[match.group(1)])
                head, tail = os.path.split(_GRID_PLACEHOLDER.sub(value, path))
                stem, ext = os.path.splitext(tail)
                return os.path.join(head, f"{stem}-{i}{ext}")
            try:
                product = _map_paths(draft.product, instance_path)
            except KeyError as exc:
                self.problems.append(f"{where}: product placeholder [[{exc.args[0]}]] is not a "
                                     "grid parameter")
                return None
            instances.append((f"{draft.name}{i}", combination, product))
        return instances

    # -- adding the tasks --------------------------------------------------------------

    def _add(self, pipeline: Pipeline, drafts: list[_Draft]) -> None:
        every = [n for d in drafts for n in d.names]
        for draft in drafts:
            upstream = {}
            for key in draft.upstream_keys:
                if any(c in key for c in "*?["):
                    upstream[key] = tuple(n for n in every if fnmatch.fnmatchcase(n, key))
                elif key in every:
                    upstream[key] = key
                else:
                    self.problems.append(f"{draft.where}: unknown upstream task {key!r} "
                                         f"(tasks: {', '.join(every)})")
            if any(key in draft.names for key in upstream):
                self.problems.append(f"{draft.where} lists itself as upstream")
                continue
            info = replace(draft.ploomber, upstream=upstream)
            names = [n for v in upstream.values() for n in ((v,) if isinstance(v, str) else v)]
            grid = GridInstances(tuple(draft.instances)) if draft.instances else None
            try:
                pipeline.notebook(draft.notebook, name=draft.name, upstream=names,
                                  parameters=draft.params, product=draft.product, grid=grid,
                                  **draft.options)
            except SpecError as exc:
                self.problems += exc.problems
                continue
            for name in draft.names:
                task = pipeline.tasks[name]
                task_info = info
                if info.function is not None:
                    task_info = replace(info, source=self._function_notebook(draft, task))
                if task_info.function is not None and task_info.source is None:
                    continue
                pipeline.tasks[name] = replace(task, ploomber=task_info,
                                               hooks=self._task_hooks(draft, task))

    def _task_hooks(self, draft: _Draft, task: Task) -> dict:
        product = _map_paths(task.product, lambda p: str((self.root / p).resolve()))
        given = {"product": product, "params": {**task.parameters, "product": product},
                 "task": SimpleNamespace(name=task.name, product=product,
                                         params={**task.parameters, "product": product})}
        hooks = {}
        for event, value in draft.hooks.items():
            hook = self._hook(value, f"{draft.where}: {_ploomber_event(event)}", TASK_HOOK_ARGS,
                              given)
            if hook is not None:
                from ..core.hooks import Hook
                hooks[event] = (Hook("python", hook),)
        return hooks

    # -- Python functions: tasks and hooks ------------------------------------------------

    def _locate(self, dotted: str, where: str) -> tuple[Path, ast.FunctionDef, str] | None:
        """The module file and the ``def`` of ``dotted`` (read, not imported: loading the
        pipeline runs none of the project's code)."""
        module, _, func = dotted.rpartition(".")
        path = _module_file(module, self.root)
        if path is None:
            self.problems.append(f"{where}: cannot find module {module!r} of {dotted!r} (looked "
                                 f"in {self.root} and the installed packages)")
            return None
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            self.problems.append(f"{where}: cannot read {path}: {exc}")
            return None
        self._check_imports(text, where, str(path))
        found = next((n for n in tree.body if isinstance(n, (ast.FunctionDef,
                                                             ast.AsyncFunctionDef))
                      and n.name == func), None)
        if found is None:
            self.problems.append(f"{where}: {path} has no function {func!r} (a top-level def)")
            return None
        return path, found, hashlib.sha256(text.encode()).hexdigest()

    def _function_notebook(self, draft: _Draft, task: Task) -> dict | None:
        """The notebook a function task runs: a parameters cell, then the import and the call
        with Ploomber's arguments (product, upstream when it has some, params)."""
        func = draft.func
        accepted, required, var_kw = _signature(func)
        passed = ["product", *(["upstream"] if task.upstream else []), *task.parameters]
        problems = [f"{draft.where}: {func.name}() takes no {a!r} argument, which Ploomber "
                    "passes" for a in passed if a not in accepted and not var_kw]
        problems += [f"{draft.where}: {func.name}() needs {a!r}, which Ploomber does not pass"
                     + (" (the task has no upstream tasks: use upstream['NAME'] in the "
                        "function to declare one)" if a == "upstream" else "")
                     for a in required if a not in passed]
        if problems:
            self.problems += problems
            return None
        module = draft.ploomber.function.rpartition(".")[0]
        params = nbformat.v4.new_code_cell("\n".join(f"{a} = None" for a in passed))
        params.metadata["tags"] = ["parameters"]
        call = nbformat.v4.new_code_cell(
            f"# Ploomber function task {draft.ploomber.function} "
            f"(module sha256 {draft.module_hash[:16]})\n"
            f"import sys\nif {str(self.root)!r} not in sys.path:\n"
            f"    sys.path.insert(0, {str(self.root)!r})\n"
            f"from {module} import {func.name}\n"
            f"{func.name}({', '.join(f'{a}={a}' for a in passed)});")
        nb = nbformat.v4.new_notebook(cells=[params, call])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        for cell in nb.cells:  # the same ids each time, so the source hash is stable
            cell.pop("id", None)
        return nb

    def _hook(self, value: Any, where: str, offered: tuple, given: dict):
        """A Ploomber hook (``dotted.path`` or ``{dotted_path: ..., ARG: VALUE}``) as a
        callable nborch's python hooks call with their payload."""
        kwargs = {}
        if isinstance(value, dict):
            kwargs = {k: v for k, v in value.items() if k != "dotted_path"}
            value = value.get("dotted_path")
        if not isinstance(value, str) or "." not in value:
            self.problems.append(f"{where}: must be a dotted path to a function, such as "
                                 "hooks.on_finish, or a mapping with 'dotted_path'")
            return None
        found = self._locate(value, where)
        if found is None:
            return None
        accepted, required, var_kw = _signature(found[1])
        wanted = [a for a in accepted if a not in kwargs]
        cannot = [a for a in wanted if a not in offered and a in required]
        if cannot:
            self.problems.append(f"{where}: {value}() asks for {', '.join(map(repr, cannot))}, "
                                 "which nborch cannot pass (it has no Ploomber objects); it "
                                 f"can pass {', '.join(offered)}")
            return None
        return PloomberHook(value, str(self.root), kwargs,
                            tuple(a for a in wanted if a in offered), given)

    def _check_imports(self, code: str, where: str, path: str) -> None:
        if _IMPORTS_PLOOMBER.search(code) and importlib.util.find_spec("ploomber") is None:
            self.problems.append(f"{where}: {path} imports ploomber, which is not installed; "
                                 "nborch runs Ploomber projects without Ploomber, so remove "
                                 "the import (or pip install ploomber)")


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
        if "traceback" in self.wants:
            given["traceback"] = {"build": "\n".join(
                f"{f['task']}: {(f['error'] or {}).get('type')}: "
                f"{(f['error'] or {}).get('message')}" for f in payload["failed_tasks"])}
        func(**self.kwargs, **{a: given[a] for a in self.wants})

    def __str__(self) -> str:
        return self.dotted


# -- helpers --------------------------------------------------------------------------------

def _env_path(source: Path) -> Path | None:
    """``env.NAME.yaml`` beside ``pipeline.NAME.yaml`` when it exists, else ``env.yaml``."""
    parts = source.name.split(".")
    candidates = []
    if len(parts) == 3 and parts[0] == "pipeline":
        candidates.append(source.parent / f"env.{parts[1]}.yaml")
    candidates.append(source.parent / "env.yaml")
    return next((p for p in candidates if p.is_file()), None)


def _pipeline_name(source: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.parent.name) or "pipeline"
    parts = source.name.split(".")
    return f"{name}.{parts[1]}" if len(parts) == 3 and parts[0] == "pipeline" else name


def _placeholder_error(exc: Exception, env_path: Path | None) -> str:
    text = template_error(exc)
    if "git" in str(exc):
        return f"{text}: the {{{{git}}}} and {{{{git_hash}}}} placeholders are not supported"
    where = env_path.name if env_path else "env.yaml (there is none beside pipeline.yaml)"
    return f"{text}; define it in {where}"


def _map_paths(product: Any, change: Callable[[str], str]) -> Any:
    if isinstance(product, dict):
        return {k: change(v) for k, v in product.items()}
    return change(product)


def _module_file(module: str, root: Path) -> Path | None:
    relative = Path(*module.split("."))
    for candidate in (root / f"{relative}.py", root / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _signature(func: ast.FunctionDef) -> tuple[list[str], list[str], bool]:
    """A def's argument names, those without a default, and whether it takes ``**kwargs``."""
    args = func.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    required = positional[:len(positional) - len(args.defaults)]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    return positional + [a.arg for a in args.kwonlyargs], required, args.kwarg is not None


def _subscripts(func: ast.FunctionDef, name: str) -> list[str]:
    """The keys of ``name["KEY"]`` in a function's body: Ploomber's upstream declaration."""
    keys = [node.slice.value for node in ast.walk(func)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == name and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)]
    return list(dict.fromkeys(keys))


def _ploomber_event(event: str) -> str:
    return {"on_success": "on_finish"}.get(event, event)
