"""Reading a Ploomber ``pipeline.yaml`` into a Pipeline of nborch tasks; every problem of the
file is reported at once (each task is checked as far as it can be, whatever the others)."""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ...core.errors import SpecError
from ...core.model import GridInstances, Pipeline
from ...core.task import (
    MAX_GRID,
    TASK_DEFAULTS,
    Task,
    check_task_name,
    has_nul,
    parameter_name_problems,
)
from ..notebooks import inspect_node, read_notebook
from ..templating import render, template_error
from ..yamltext import parse_yaml_text
from . import env, functions, grid, sources
from .conventions import Draft, PloomberTask, convention
from .keys import (
    FILE_SUFFIXES,
    META_KEYS,
    PIPELINE_KEYS,
    STATIC_ANALYSIS,
    TASK_KEYS,
    UNSUPPORTED,
    unknown_keys,
)

# nborch's own task options work on a Ploomber task too (Ploomber would reject them)
NBORCH_OPTIONS = tuple(k for k in TASK_DEFAULTS if k != "cwd")
TASK_HOOK_ARGS = ("task", "product", "params", "client")  # client: None for file products
PIPELINE_HOOK_ARGS = {"on_render": ("dag",), "on_finish": ("dag", "report"),
                      "on_failure": ("dag", "traceback")}
_EVENTS = (("on_render", "on_render"), ("on_finish", "on_success"),
           ("on_failure", "on_failure"))


def load(data: Any, source: Path, *, allow_large_grid: bool = False) -> Pipeline:
    """A Pipeline from a parsed Ploomber spec; raises SpecError listing every problem."""
    return _Reader(source, allow_large_grid).read(data)


class _Reader:
    def __init__(self, source: Path, allow_large_grid: bool):
        self.source = Path(source).resolve()
        self.root = self.source.parent
        self.allow_large_grid = allow_large_grid
        self.problems: list[str] = []
        self.failed: list[str] = []  # names (or name patterns) of the tasks not read
        self.computed: dict[str, dict] = {}
        self.renders: list = []  # (where, hook) of each on_render hook, called once read

    def read(self, data: Any) -> Pipeline:
        if isinstance(data, list):
            data = {"tasks": data}
        if "location" in data:  # a factory: there is nothing else to read
            raise SpecError(f"pipeline: 'location' ({data['location']}) is not supported: "
                            f"{UNSUPPORTED['location']}", source=str(self.source))
        self.problems += unknown_keys(data, PIPELINE_KEYS, "pipeline")
        self.serializer, self.unserializer = data.get("serializer"), data.get("unserializer")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            self.problems.append("pipeline: 'meta' must be a mapping")
            meta = {}
        self.problems += unknown_keys(meta, META_KEYS, "meta")
        if meta.get("extract_product"):
            self.problems.append("meta: extract_product is not supported; declare each task's "
                                 "'product' in pipeline.yaml")
        self.extract_upstream = meta.get("extract_upstream", True) is not False
        self.relative_to_source = bool(meta.get("product_relative_to_source", False))
        self.context, self.env_path = env.context(self.source, self.problems, parse_yaml_text)
        items = data.get("tasks")
        if not isinstance(items, list) or not items:
            self.problems.append("pipeline: 'tasks' must be a list of tasks with 'source' "
                                 "and 'product'")
            items = []
        if meta.get("import_tasks_from"):
            items = items + sources.imported_tasks(meta["import_tasks_from"], self.root,
                                                   self.problems, parse_yaml_text)
        tasks = [self._render(item, n) for n, item in enumerate(items)]
        self._compute(tasks)
        drafts = [d for n, item in enumerate(tasks) if item is not None
                  and (d := self._draft(item, n)) is not None]
        name = env.pipeline_name(self.source)
        self.dag = functions.DagInfo(name)
        pipeline = Pipeline(name, source=self.source, allow_large_grid=self.allow_large_grid,
                            **self._pipeline_hooks(data))
        self._add(pipeline, drafts)
        for where, hook in [] if self.problems else self.renders:  # as Ploomber renders
            failed = hook.render()
            if failed:
                self.problems.append(f"{where}: {hook}() failed: {failed}")
        if self.problems:
            raise SpecError(list(dict.fromkeys(self.problems)), source=str(self.source))
        return pipeline

    def _render(self, item: Any, index: int) -> Any:
        """One task with its ``{{placeholders}}`` rendered (None when one cannot be)."""
        try:
            return render(item, self.context)
        except Exception as exc:  # jinja2 errors of every kind
            self.problems.append(f"{_where(item, index)}: "
                                 f"{env.placeholder_error(exc, self.env_path)}")
            self.failed.append(_guess_name(item))
            return None

    def _pipeline_hooks(self, data: dict) -> dict:
        hooks = {}
        for key, event in _EVENTS:
            if data.get(key):
                try:
                    value = render(data[key], self.context)
                except Exception as exc:
                    self.problems.append(f"pipeline: {key}: "
                                         f"{env.placeholder_error(exc, self.env_path)}")
                    continue
                hook = functions.make_hook(value, self.root, f"pipeline: {key}",
                                           PIPELINE_HOOK_ARGS[key], {"dag": self.dag},
                                           self.problems)
                if hook is not None and event == "on_render":
                    self.renders.append((f"pipeline: {key}", hook))
                elif hook is not None:
                    hooks[event] = [hook]
        return hooks

    # -- computed values (module::function in params and grids) ---------------------------

    def _compute(self, tasks: list) -> None:
        """Call every computed value of the spec at once (one Python process)."""
        calls = functions.computed_values(tasks)
        results = functions.compute(list(calls.values()), self.root)
        self.computed = dict(zip(calls, results))

    def _computed(self, value: Any, for_grid: bool, where: str) -> Any:
        """``(True, value)`` for a computed value (None when calling it failed), else
        ``(False, value)``."""
        if functions.dotted_spec(value) is None:
            return False, value
        result = self.computed.get(functions.value_key(value, for_grid)) or {
            "error": "not called"}
        if "error" in result:
            dotted = value if isinstance(value, str) else value["dotted_path"]
            self.problems.append(f"{where}: calling {dotted} failed: {result['error']}")
            return True, None
        return True, result["value"]

    # -- one task ------------------------------------------------------------------------

    def _draft(self, item: Any, index: int) -> Draft | None:
        where = _where(item, index)
        if not isinstance(item, dict) or not isinstance(item.get("source"), str):
            self.problems.append(f"{where}: must be a mapping with 'source' (a notebook, a "
                                 "script or a dotted path to a function) and 'product'")
            return None
        src = item["source"]
        if has_nul(src):
            self.problems.append(f"{where}: source {src!r} contains a NUL byte")
            return None
        before = len(self.problems)
        self.problems += unknown_keys(item, TASK_KEYS + NBORCH_OPTIONS, where)
        kind = sources.kind(src, item, where, self.problems)
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
            params = {}
        # each name becomes `NAME = value` in the injected cell (and a function's argument)
        self.problems += parameter_name_problems(params, where)
        if "resources_" in params:  # files a task reads: injected as absolute paths
            params["resources_"] = sources.resources(params["resources_"], self.root, where,
                                                        self.problems)
        if "grid" not in item:
            for key, value in params.items():
                _, params[key] = self._computed(value, False, f"{where}: params {key!r}")
        static = STATIC_ANALYSIS.get(item.get("static_analysis", "regular"))
        if static is None:
            self.problems.append(f"{where}: static_analysis must be regular, strict or disable")
        options = {k: item[k] for k in TASK_DEFAULTS if k in item}
        if item.get("kernelspec_name"):
            options.setdefault("kernel", item["kernelspec_name"])
        serialized = any(item.get(k, data_value) is not None for k, data_value in
                         (("serializer", self.serializer), ("unserializer", self.unserializer)))
        if kind == "function" and serialized:  # refused above: no call to check
            self.failed.append(_guess_name(item))
            return None
        draft = None
        if kind == "function":
            draft = self._function(src, item, where, params, product, static, options)
        elif kind is not None:
            draft = self._notebook(src, item, where, params, product, static, options)
        if draft is not None and item.get("grid") is not None:
            draft.instances = self._grid(item["grid"], draft, where)
        if draft is None or len(self.problems) > before:
            self.failed.append(_guess_name(item))
            return None
        return draft

    def _notebook(self, src, item, where, params, product, static, options) -> Draft | None:
        path = (self.root / src).resolve()
        name = item.get("name") or path.stem
        try:
            nb = read_notebook(path)
        except SpecError as exc:
            self.problems += [f"{where}: {p}" for p in exc.problems]
            return None
        functions.check_imports("\n".join(c.source for c in nb.cells if c.cell_type == "code"),
                                where, str(path), self.problems)
        if not isinstance(product, (str, dict)):
            return None
        info = sources.nb_product(item, where, product, self.problems)
        if info is None:
            return None
        keys = (inspect_node(nb, path).declared_upstream or []) if self.extract_upstream else []
        if item.get("local_execution") or item.get("class") == "ScriptRunner":
            options["cwd"] = str(path.parent)
        info = replace(info, static_analysis=static or "regular")
        return self._make(name, path, where, params, product, keys, item, options, info)

    def _function(self, src, item, where, params, product, static, options) -> Draft | None:
        found = functions.locate(src, self.root, where, self.problems)
        if found is None:
            return None
        name = item.get("name") or src.rsplit(".", 1)[1]
        keys = functions.subscripts(found.node, "upstream") if self.extract_upstream else []
        info = PloomberTask(static_analysis=static or "regular", function=src)
        draft = self._make(name, found.path, where, params, product, keys, item, options, info)
        if draft is not None:
            draft.func = found
        return draft

    def _make(self, name, path, where, params, product, keys, item, options, info) -> Draft | None:
        template = ""
        if item.get("grid") is not None and isinstance(name, str) and grid.has_placeholders(name):
            template, name = name, grid.group_name(name, path.stem)
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
            product = grid.map_paths(product, lambda p: str(path.parent / p))
        options.setdefault("cwd", str(self.root))
        hooks = {event: item[key] for key, event in _EVENTS if item.get(key)}
        return Draft(name, path, where, dict(params), product,
                      list(dict.fromkeys(keys + explicit)), options, info, hooks,
                      name_template=template or name)

    def _grid(self, spec: Any, draft: Draft, where: str) -> list | None:
        """The instances: ``(name, grid values, product)`` each (see ``grid``)."""
        def computed(value):
            found, values = self._computed(value, True, f"{where}: grid")
            return (values or []) if found else None
        expanded, problems = grid.expand(spec, where, computed)
        problems += parameter_name_problems({k for part in expanded for k in part}, where)
        size = sum(math.prod(len(v) for v in part.values()) for part in expanded)
        if size > MAX_GRID and not self.allow_large_grid:
            problems.append(f"{where}: the grid has {size:,} combinations, more than "
                            f"{MAX_GRID:,}; pass --allow-large-grid (allow_large_grid=True in "
                            "Python) if you mean it")
        self.problems += problems
        if problems:
            return None
        combinations = grid.combinations(expanded)
        instances = []
        for i, combination in enumerate(combinations):
            values = {**combination, **draft.params}
            try:
                name = grid.instance_name(draft.name_template, i, values)
                product = grid.map_paths(draft.product, functools.partial(
                    grid.instance_path, index=i, values=values))
            except Exception as exc:  # jinja2 errors of every kind
                self.problems.append(f"{where}: {template_error(exc)} in its name or "
                                     "product ([[placeholders]])")
                return None
            instances.append((name, combination, product))
        names = [i[0] for i in instances]
        bad = [p for n in dict.fromkeys(names) if (p := check_task_name(n, where))]
        twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
        self.problems += [f"{p} (an instance of name: {draft.name_template}); give the grid a "
                          "'name:' whose values make names nborch accepts" for p in bad]
        if twice:
            self.problems.append(f"{where}: several instances are named "
                                 f"{', '.join(map(repr, twice))} (name: {draft.name_template}); "
                                 "put the [[parameters]] that tell them apart in 'name:'")
        return None if bad or twice else instances

    # -- adding the tasks --------------------------------------------------------------

    def _add(self, pipeline: Pipeline, drafts: list[Draft]) -> None:
        every = [n for d in drafts for n in d.names]
        for draft in drafts:
            upstream = {}
            for key in draft.upstream_keys:
                if any(c in key for c in "*?["):
                    upstream[key] = tuple(n for n in every if fnmatch.fnmatchcase(n, key))
                elif key in every:
                    upstream[key] = key
                elif not any(fnmatch.fnmatchcase(key, f) for f in self.failed):
                    self.problems.append(f"{draft.where}: unknown upstream task {key!r} "
                                         f"(tasks: {', '.join(every)})")
            if any(key in draft.names for key in upstream):
                self.problems.append(f"{draft.where} lists itself as upstream")
                continue
            if draft.instances == []:
                continue  # a grid without combinations has no tasks, as in Ploomber
            info = replace(draft.ploomber, upstream=upstream)
            names = [n for v in upstream.values() for n in ((v,) if isinstance(v, str) else v)]
            instances = GridInstances(tuple(draft.instances)) if draft.instances else None
            try:
                pipeline.notebook(draft.notebook, name=draft.name, upstream=names,
                                  parameters=draft.params, product=draft.product,
                                  grid=instances, **draft.options)
            except SpecError as exc:
                self.problems += exc.problems
                continue
            for name in draft.names:
                task = pipeline.tasks[name]
                source = None if info.function is None else self._function_notebook(draft, task)
                pipeline.tasks[name] = replace(task, product_convention=convention(info, source),
                                               hooks=self._task_hooks(draft, task))

    def _task_hooks(self, draft: Draft, task: Task) -> dict:
        product = grid.map_paths(task.product, lambda p: str((self.root / p).resolve()))
        params = {**task.parameters, "product": product}
        given = {"product": product, "params": params, "client": None,
                 "task": SimpleNamespace(name=task.name, product=product, params=params,
                                         client=None)}
        self.dag.add(given["task"])
        hooks = {}
        for event, value in draft.hooks.items():
            where = f"{draft.where}: {dict((e, k) for k, e in _EVENTS)[event]}"
            hook = functions.make_hook(value, self.root, where, TASK_HOOK_ARGS, given,
                                       self.problems)
            if hook is not None and event == "on_render":
                self.renders.append((where, hook))
            elif hook is not None:
                from ...core.hooks import Hook
                hooks[event] = (Hook("python", hook),)
        return hooks

    def _function_notebook(self, draft: Draft, task: Task) -> dict | None:
        """The notebook a function task runs (its arguments checked against the def)."""
        upstream = task.upstream or draft.upstream_keys  # (some may be tasks not read)
        passed = ["product", *(["upstream"] if upstream else []), *task.parameters]
        problems = functions.call_problems(draft.func.node, passed, draft.where)
        self.problems += problems
        function = draft.ploomber.function
        assert function is not None, "only a function task has a generated notebook"
        return None if problems else functions.function_notebook(
            function, draft.func, self.root, passed)


# -- helpers --------------------------------------------------------------------------------

def _where(item: Any, index: int) -> str:
    if isinstance(item, dict) and isinstance(item.get("name") or item.get("source"), str):
        return f"task {item.get('name') or item.get('source')!r}"
    return f"task {index + 1}"


def _guess_name(item: Any) -> str:
    """The name (a pattern, for a grid) a task that could not be read would have had."""
    if not isinstance(item, dict):
        return ""
    name = item.get("name")
    if not isinstance(name, str):
        source = str(item.get("source") or "")
        name = Path(source).stem if Path(source).suffix.lower() in FILE_SUFFIXES \
            else source.rsplit(".", 1)[-1]  # a function's name
    name = re.sub(r"\[\[.*?\]\]", "*", name)
    return f"{name}*" if item.get("grid") is not None else name
