"""Everything checked before a run starts: graph, notebooks, parameters, kernels, secrets.

``prepare`` turns a Pipeline plus run-time inputs into the fully resolved tasks the engine
runs, or raises one ValidationError listing every problem. Nothing here writes anything.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from pathlib import Path

from ..core.dag import find_cycle
from ..core.errors import SpecError, ValidationError
from ..core.hooks import missing_settings
from ..core.model import Pipeline
from ..core.secrecy import MIN_SECRET_LENGTH, own_credentials, search_path, too_short
from ..core.task import Task, has_nul
from .notebooks import NotebookInfo, inspect_node, inspect_notebook, type_mismatch, type_name
from .templating import render, template_error

DEFAULT_KERNEL = "python3"


@dataclass(frozen=True)
class PreparedTask:
    task: Task
    parameters: dict          # rendered, type-checked; without ``upstream``
    kernel: str | None        # None for a command task
    inject_upstream: bool     # False only for a task with no upstream whose cell lacks it
    secrets: dict = field(default_factory=dict, repr=False)  # name -> value, never stored
    source_hash: str = ""
    command: tuple[str, ...] | None = None  # rendered argv of a command task
    product: str | dict | None = None       # rendered, absolute (URLs as given)

    @property
    def products(self) -> dict[str, str]:
        """Declared products by name; a single path is named ``product``."""
        if self.product is None:
            return {}
        return {"product": self.product} if isinstance(self.product, str) else dict(self.product)


@dataclass(frozen=True)
class PreparedRun:
    pipeline: Pipeline
    run_id: str
    logical_date: datetime
    params: dict
    tasks: dict  # name -> PreparedTask, in the pipeline's order
    env: dict = field(default_factory=dict, repr=False)  # environment + .env: hook settings

    @property
    def edges(self) -> dict[str, tuple[str, ...]]:
        return {name: p.task.upstream for name, p in self.tasks.items()}

    # Cached: the engine reads these for every attempt, and each walks every task.
    @cached_property
    def secret_values(self) -> list[str]:
        return sorted({v for p in self.tasks.values() for v in p.secrets.values() if v},
                      key=len, reverse=True)

    @cached_property
    def withheld_env(self) -> frozenset[str]:
        """Environment variables no task inherits from nborch: every declared secret (a
        task gets its own back explicitly), hook header secrets, nborch's credentials."""
        hooks = [self.pipeline.hooks] + [p.task.hooks for p in self.tasks.values()]
        headers = {var for by_event in hooks for listed in by_event.values() for hook in listed
                   for var in hook.options.get("secret_headers", {}).values()}
        return frozenset({s for p in self.tasks.values() for s in p.task.secrets}
                         | headers | own_credentials(os.environ))


def template_context(run_id: str, logical_date: datetime, params: dict) -> dict:
    return {"run_id": run_id, "logical_date": logical_date.isoformat(),
            "ds": logical_date.strftime("%Y-%m-%d"), "params": params}


def merge_params(pipeline: Pipeline, overrides: dict) -> dict:
    unknown = [k for k in overrides if k not in pipeline.parameters]
    if unknown:
        declared = ", ".join(pipeline.parameters) or "none"
        raise ValidationError(
            [f"unknown pipeline parameter {k!r} given with -p (declared: {declared})"
             for k in unknown],
            source=_where(pipeline))
    return {**pipeline.parameters, **overrides}


def prepare(pipeline: Pipeline, overrides: dict | None = None, *, run_id: str = "validate",
            logical_date: datetime | None = None,
            pools: Collection[str] | None = None) -> PreparedRun:
    """Check everything a run needs; ``pools``, the pools set in the run store, when the
    caller read them (the spec layer does not read the store)."""
    params = merge_params(pipeline, overrides or {})
    logical_date = logical_date or datetime.now(timezone.utc)
    problems: list[str] = []
    infos: dict[str, NotebookInfo] = {}
    for name, task in pipeline.tasks.items():
        if task.command is not None:
            continue  # a command has no cells to read
        try:
            infos[name] = _inspect(task)
        except ValidationError as exc:
            problems += [f"{label(task)}: {p}" for p in exc.problems]
    # A notebook's own ``upstream = [...]`` adds edges (Ploomber's convention; a Ploomber
    # project's tasks have theirs already, wildcards expanded).
    for name, info in infos.items():
        declared = info.declared_upstream
        if declared and pipeline.tasks[name].product_convention is None:
            pipeline.add_upstream(name, declared)
    problems += graph_problems(pipeline)
    if pools is not None:
        problems += _pool_problems(pipeline, pools)

    context = template_context(run_id, logical_date, params)
    secret_env = _secret_source(pipeline)
    for secret in dict.fromkeys(s for t in pipeline.tasks.values() for s in t.secrets):
        if secret not in secret_env:
            users = "every task" if secret in pipeline.secrets else ", ".join(dict.fromkeys(
                label(t) for t in pipeline.tasks.values() if secret in t.secrets))
            problems.append(f"secret {secret!r} (needed by {users}) is not set in the "
                            f"environment or in {_dotenv_path(pipeline)}")
        elif too_short(secret_env[secret]):
            problems.append(f"secret {secret!r} is too short to be masked safely: it needs at "
                            f"least {MIN_SECRET_LENGTH} characters besides spaces (masking a "
                            "shorter value would also mask ordinary output)")
    owners = [("pipeline", pipeline.hooks)] + [(f"task {n!r}", t.hooks)
                                               for n, t in pipeline.tasks.items() if t.grid is None]
    owners += [(f"grid task {g!r}", pipeline.tasks[names[0]].hooks)
               for g, names in pipeline.grids.items()]
    for owner, hooks in owners:
        for event, listed in hooks.items():
            problems += [f"{owner}: {event}: the hook needs {var!r}, which is not set in the "
                         f"environment or in {_dotenv_path(pipeline)}"
                         for var in missing_settings(listed, secret_env)]
    prepared: dict[str, PreparedTask] = {}
    kernels = installed_kernels()  # looked up once per check, not per task
    for name, task in pipeline.tasks.items():
        if name not in infos and task.command is None:  # unreadable notebook: already reported
            continue
        values = _render_all(task.parameters, context, f"{label(task)}: parameter", problems)
        product = _render_product(pipeline, task, {**context, "task": name, "parameters": values},
                                  problems)
        secrets = {s: secret_env[s] for s in task.secrets if s in secret_env}
        if task.command is not None:
            rendered = _render_all(dict(enumerate(task.command)),
                                   {**context, "task": name, "product": product},
                                   f"{label(task)}: command argument", problems)
            argv = tuple(str(rendered[i]) for i in sorted(rendered))
            problems += [f"{label(task)}: command argument {a!r} contains a NUL byte"
                         for a in argv if has_nul(a)]
            if len(argv) == len(task.command):
                problems += _program_problems(task, argv[0])
            prepared[name] = PreparedTask(task, {}, None, False, secrets,
                                          stable_hash([argv, task.env]), command=argv,
                                          product=product)
            continue
        info = infos[name]
        if product is not None and "product" in values:
            problems.append(f"{label(task)}: 'product' is injected from the task's declared "
                            "product; do not also give it as a parameter")
        convention = task.product_convention
        if convention is not None:
            problems += convention_parameter_problems(label(task), task, info, values,
                                                      strict=convention.strict_parameters)
        else:
            problems += parameter_problems(label(task), task, info, values)
        kernel = task.kernel or info.kernel_name or DEFAULT_KERNEL
        if kernel not in kernels:
            problems.append(f"{label(task)}: kernel {kernel!r} is not installed (installed: "
                            f"{', '.join(sorted(kernels))}); "
                            "set 'kernel:' or install it")
        if product is not None and ("product" in info.parameters or convention is not None):
            values["product"] = product  # a notebook that declares `product` gets it
        # A product convention leaves `upstream = None` alone without upstream tasks.
        inject = bool(task.upstream) or ("upstream" in info.parameters and convention is None)
        prepared[name] = PreparedTask(task, values, kernel, inject, secrets, info.source_hash,
                                      product=product)
    problems += _shared_products(prepared)
    if problems:
        raise ValidationError(list(dict.fromkeys(problems)), source=_where(pipeline))
    return PreparedRun(pipeline, run_id, logical_date, params, prepared, secret_env)


def _pool_problems(pipeline: Pipeline, pools: Collection[str]) -> list[str]:
    """One problem per pool the store does not have, naming the tasks that use it."""
    users: dict[str, dict[str, None]] = {}
    for t in pipeline.tasks.values():
        if t.pool is not None and t.pool not in pools:
            users.setdefault(t.pool, {})[label(t)] = None
    known = f"pools: {', '.join(sorted(pools))}" if pools else "it has none"
    return [f"pool {pool!r} (of {', '.join(tasks)}) is not set in the run store ({known}); "
            f"create it with `nborch pool set {pool} --slots N`" for pool, tasks in users.items()]


def _inspect(task: Task) -> NotebookInfo:
    """A task's notebook, or the notebook generated for it (a Ploomber function task's)."""
    assert task.notebook is not None, "a command task has no notebook to read"
    convention = task.product_convention
    if convention is not None and convention.source is not None:
        import nbformat
        return inspect_node(nbformat.from_dict(convention.source), task.notebook)
    return inspect_notebook(task.notebook)


def _render_all(templates: dict, context: dict, what: str, problems: list[str]) -> dict:
    """``templates`` rendered; each failure appended to ``problems`` as "WHAT KEY: why"."""
    out = {}
    for key, raw in templates.items():
        try:
            out[key] = render(raw, context)
        except Exception as exc:  # jinja2 errors of every kind
            problems.append(f"{what} {key!r}: {template_error(exc)}")
    return out


def _render_product(pipeline: Pipeline, task: Task, context: dict,
                    problems: list[str]) -> str | dict | None:
    """The task's declared product(s), rendered and made absolute (relative paths are
    relative to the pipeline's folder; URLs stay as written)."""
    if task.product is None:
        return None
    single = isinstance(task.product, str)
    raw = {"product": task.product} if isinstance(task.product, str) else task.product
    rendered = _render_all(raw, context, f"{label(task)}: product", problems)
    paths = {}
    for key, value in rendered.items():
        value = str(value)
        if has_nul(value):
            problems.append(f"{label(task)}: product {key!r} is {value!r}, with a NUL byte")
            continue
        paths[key] = value if "://" in value else str((pipeline.root / value).resolve())
    return paths.get("product") if single else paths


def _shared_products(prepared: dict[str, PreparedTask]) -> list[str]:
    """Two tasks declaring the same product would overwrite each other's output."""
    owner: dict[str, str] = {}
    problems = []
    for name, p in prepared.items():
        for path in p.products.values():
            if path in owner:
                problems.append(f"tasks {owner[path]!r} and {name!r} both declare product {path}; "
                                "give each task its own (a grid can use {{ task }} or "
                                "{{ parameters.NAME }} in the path)")
            owner.setdefault(path, name)
    return problems


def _program_problems(task: Task, program: str) -> list[str]:
    """A command whose program cannot be found fails before anything runs."""
    import shutil
    path = search_path(task.env)
    if os.sep in program:
        found = (task.workdir / program).is_file()
    else:
        found = shutil.which(program, path=path) is not None
    if found:
        return []
    where = f"in {task.workdir}" if os.sep in program else "on PATH"
    return [f"{label(task)}: program {program!r} of its command is not found {where}"]


def stable_hash(value) -> str:
    """A digest of JSON-able ``value`` that is the same in every process (fingerprints)."""
    import hashlib
    import json
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def label(task: Task) -> str:
    """How a problem names a task. A grid's instances share one label, so a problem they
    all have is reported once, not once per instance."""
    return f"task {task.name!r}" if task.grid is None else f"grid task {task.grid!r}"


def graph_problems(pipeline: Pipeline) -> list[str]:
    problems = []
    grid_of = {n: grid for grid, names in pipeline.grids.items() for n in names}
    for name, task in pipeline.tasks.items():
        for up in task.upstream:
            if up == name or (task.grid is not None and grid_of.get(up) == task.grid):
                problems.append(f"{label(task)} lists itself as upstream")
            elif up not in pipeline.tasks:
                problems.append(f"{label(task)}: unknown upstream task {up!r} "
                                f"(tasks: {pipeline.listing()})")
    problems = list(dict.fromkeys(problems))
    if not problems:
        cycle = find_cycle({n: t.upstream for n, t in pipeline.tasks.items()})
        if cycle:
            problems.append(f"the tasks form a cycle: {' >> '.join(cycle)}")
    return problems


def parameter_problems(who: str, task: Task, info: NotebookInfo, values: dict) -> list[str]:
    """Problems of ``values`` against the notebook's parameters cell; ``who`` is the task's
    label (see ``label``)."""
    nb = task.notebook
    if values and not info.has_parameters_cell:
        return [f"{who}: parameters given but {nb} has no cell tagged 'parameters' "
                "(tag the cell that holds the defaults)"]
    if not info.parameters:  # a language we cannot inspect: papermill injects as given
        return []
    problems = []
    for key, value in values.items():
        if key == "upstream":
            problems.append(f"{who}: 'upstream' is injected by nborch and cannot be a parameter")
            continue
        param = info.parameters.get(key)
        if param is None:
            problems.append(f"{who}: unknown parameter {key!r} for {nb} "
                            f"(its parameters: {', '.join(info.parameters)})")
        elif param.has_literal_default and type_mismatch(param.default, value):
            problems.append(
                f"{who}: parameter {key!r} of {nb} is {type_name(param.default)} "
                f"(default {param.default_source}) but gets {type_name(value)} {value!r}")
    return problems


def convention_parameter_problems(who: str, task: Task, info: NotebookInfo, values: dict,
                                  *, strict: bool) -> list[str]:
    """A task with a product convention gets parameters its notebook does not declare
    injected anyway (as Ploomber does), unless its parameters are strict: then they, and
    declared ones nobody passes, are errors."""
    nb = task.notebook
    if values and not info.has_parameters_cell:
        return [f"{who}: parameters given but {nb} has no cell tagged 'parameters' "
                "(tag the cell that holds the defaults)"]
    problems = [f"{who}: 'upstream' is injected and cannot be a parameter"
                for key in values if key == "upstream"]
    if not strict or not info.parameters:
        return problems
    injected = ("upstream", "product")
    unexpected = [k for k in values if k not in info.parameters and k not in injected]
    missing = [k for k in info.parameters if k not in values and k not in injected]
    problems += [f"{who}: parameter {k!r} is not declared in the parameters cell of {nb} "
                 "(its parameters are checked strictly)" for k in unexpected]
    problems += [f"{who}: parameter {k!r} of {nb} is not given in 'params' "
                 "(its parameters are checked strictly)" for k in missing]
    return problems


def installed_kernels() -> frozenset[str]:
    """The kernels installed now: looked up at each check (a quarter of a millisecond), so a
    scheduler that has run for weeks sees a kernel installed today."""
    return frozenset(kernelspec_manager().find_kernel_specs())


@lru_cache(maxsize=1)
def kernelspec_manager():
    """jupyter_client's, made once per process (about 0.1 s): where kernelspecs are looked
    for (``JUPYTER_PATH`` and the like) is read then."""
    from jupyter_client.kernelspec import KernelSpecManager
    return KernelSpecManager()


def _dotenv_path(pipeline: Pipeline) -> Path:
    return pipeline.root / ".env"


def _secret_source(pipeline: Pipeline) -> dict[str, str]:
    """Secrets come from the process environment, then a ``.env`` beside the pipeline."""
    merged: dict[str, str] = {}
    path = _dotenv_path(pipeline)
    if path.is_file():
        from dotenv import dotenv_values
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ)
    return merged


def settings(pipeline: Pipeline) -> dict[str, str]:
    """What a pipeline's hooks and secrets read: its ``.env`` under the process environment."""
    return _secret_source(pipeline)


def _where(pipeline: Pipeline) -> str | None:
    return str(pipeline.source) if pipeline.source else None


__all__ = ["PreparedRun", "PreparedTask", "prepare", "SpecError"]
