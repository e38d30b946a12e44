"""Pipeline: the validated shape of a pipeline, whatever it was written in, and its grids.

``Pipeline`` is also the Python API's builder (``p.notebook(...)``); each ``Task``
(``core.task``) is a frozen value, so nothing downstream of the spec can change a task
behind the engine's back.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .clock import parse_duration
from .errors import SpecError
from .hooks import parse_hooks
from .task import (
    MAX_GRID,
    NAME_RE,
    TASK_DEFAULTS,
    Task,
    check_product,
    check_task_name,
    has_nul,
    is_parameter_name,
    normalize_options,
    parameter_name_problems,
)


@dataclass(frozen=True)
class GridInstances:
    """A grid whose instances are already named and parameterized (a Ploomber grid, whose
    names and products follow Ploomber's rules): ``(name, parameters, product)`` each."""
    instances: tuple[tuple[str, dict, Any], ...]


@dataclass(frozen=True)
class Grid:
    """The instances of a grid task, ``NAME-0``, ``NAME-1``, ...; usable in ``upstream``
    (which then waits for every instance)."""
    name: str
    tasks: tuple[Task, ...]


def grid_combinations(grid: Any, where: str, allow_large: bool = False) -> list[dict]:
    """The parameter sets of ``grid``: the Cartesian product of its lists, in order (the
    last parameter varies fastest). Raises SpecError naming ``where`` and the culprit."""
    if not isinstance(grid, dict) or not grid:
        raise SpecError(f"{where}: 'grid' must be a mapping from parameter names to lists of "
                        f"values, such as {{region: [eu, us]}}, not {grid!r}")
    problems = []
    for key, values in grid.items():
        if not is_parameter_name(key):
            problems.append(f"{where}: grid parameter {key!r} is not a parameter name (a "
                            "Python identifier)")
        elif not isinstance(values, (list, tuple)):
            problems.append(f"{where}: grid parameter {key!r} must be a list of values, "
                            f"not {type(values).__name__} {values!r}")
        elif not values:
            problems.append(f"{where}: grid parameter {key!r} has an empty list, so the grid "
                            "would have no instances")
    if problems:
        raise SpecError(problems)
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_GRID and not allow_large:
        shape = " x ".join(str(len(v)) for v in grid.values())
        raise SpecError(f"{where}: the grid has {size:,} combinations ({shape}), more than "
                        f"{MAX_GRID:,}; pass --allow-large-grid (allow_large_grid=True in "
                        "Python) if you mean it")
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def read_run_timeout(value: Any, source: str | None) -> float | None:
    """``run_timeout``: a duration (``2h``, ``90m``, seconds), or None for no limit."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise SpecError(f"pipeline: run_timeout: {exc}", source=source) from None
    if seconds <= 0:
        raise SpecError(f"pipeline: run_timeout must be more than 0, not {value!r}", source=source)
    return seconds


def read_hooks(declared: dict, where: str) -> dict[str, tuple]:
    """``{"on_failure": [...], ...}`` (YAML items or callables) as ``Hook`` tuples."""
    return {event: tuple(parse_hooks(value, f"{where}: {event}"))
            for event, value in declared.items() if value}



class Pipeline:
    """A named DAG of notebook tasks.

    Build one in Python::

        p = Pipeline("daily_sales", retries=2)
        extract = p.notebook("extract.ipynb", parameters={"day": "{{ ds }}"})
        regions = p.notebook("region.ipynb", upstream=[extract], grid={"region": ["eu", "us"]})
        p.notebook("clean.ipynb", upstream=[regions])
        run = p.run(max_parallel=4)

    or load one with ``Pipeline.from_yaml(path)`` / ``Pipeline.load(path_or_folder)``.
    (``nborch.Pipeline`` is ``runtime.api.Pipeline``: this class plus the verbs that load,
    check and run it.)
    """

    def __init__(self, name: str, *, parameters: dict | None = None, secrets: Sequence[str] = (),
                 schedule: dict | None = None, source: str | Path | None = None,
                 root: str | Path | None = None, allow_large_grid: bool = False,
                 on_failure: Any = None, on_success: Any = None, on_retry: Any = None,
                 on_sla_miss: Any = None, run_timeout: Any = None,
                 executor: str | None = None, **defaults: Any):
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise SpecError(f"pipeline name {name!r} may only use letters, digits, "
                            "'_', '.' and '-'", source=str(source) if source else None)
        unknown = set(defaults) - set(TASK_DEFAULTS)
        if unknown:
            raise SpecError(f"unknown pipeline option(s) {', '.join(sorted(unknown))}; "
                            f"task defaults are {', '.join(TASK_DEFAULTS)}")
        options, problems = normalize_options(defaults, "defaults")
        if problems:
            raise SpecError(problems, source=str(source) if source else None)
        self.name = name
        self.parameters = dict(parameters or {})
        self.secrets = tuple(secrets)
        self.schedule = schedule
        self.source = Path(source).resolve() if source else None
        self.root = Path(root).resolve() if root else (
            self.source.parent if self.source else Path.cwd())
        self.defaults = {**TASK_DEFAULTS, **options}
        self.allow_large_grid = allow_large_grid
        self.run_timeout = read_run_timeout(run_timeout, self._where())
        if executor is not None and (not isinstance(executor, str) or not executor.strip()):
            raise SpecError(f"pipeline: executor must be a name such as local or "
                            f"dask://HOST:PORT, not {executor!r}", source=self._where())
        self.executor = executor  # where its runs go unless told: checked by the runtime
        self.hooks = read_hooks({"on_failure": on_failure, "on_success": on_success,
                                 "on_retry": on_retry, "on_sla_miss": on_sla_miss}, "pipeline")
        self.tasks: dict[str, Task] = {}
        self.grids: dict[str, tuple[str, ...]] = {}  # grid name -> its instances' names

    # -- building -----------------------------------------------------------------

    def notebook(self, path: str | Path, *, name: str | None = None,
                 upstream: Iterable[Task | Grid | str] = (), parameters: dict | None = None,
                 grid: dict | GridInstances | None = None,
                 product: str | dict | None = None, on_failure: Any = None,
                 on_success: Any = None, on_retry: Any = None, **options: Any) -> Task | Grid:
        """Add a notebook task; ``path`` is relative to the pipeline's folder (the current
        folder for a pipeline built in Python). Returns the task, usable in ``upstream``.

        With ``grid={"region": ["eu", "us"], ...}`` the notebook runs once per combination
        of values, as tasks ``NAME-0``, ``NAME-1``, ...; returns the ``Grid``. ``product``
        declares the files it writes (a path, or a mapping of names to paths)."""
        if has_nul(path):
            raise SpecError(f"task {name or str(path)!r}: notebook path {str(path)!r} contains a "
                            "NUL byte", source=self._where())
        notebook = (self.root / Path(path)).resolve()
        return self._add(notebook.stem if name is None else name, notebook=notebook,
                         upstream=upstream, parameters=parameters, grid=grid, product=product,
                         hooks={"on_failure": on_failure, "on_success": on_success,
                                "on_retry": on_retry}, options=options)

    def command(self, argv: Sequence[str], *, name: str | None = None,
                upstream: Iterable[Task | Grid | str] = (), product: str | dict | None = None,
                on_failure: Any = None, on_success: Any = None, on_retry: Any = None,
                **options: Any) -> Task:
        """Add a command task: ``argv`` runs without a shell, each argument a template (see
        the docs), in ``cwd`` (default: the pipeline's folder). Exit code 0 is success."""
        if isinstance(argv, str) or not isinstance(argv, (list, tuple)) or not argv or \
                not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in argv):
            raise SpecError(f"task {name or argv!r}: 'command' must be a non-empty list of "
                            "arguments such as [dbt, build, --select, orders] (no shell: "
                            "one list item per argument)", source=self._where())
        argv = tuple(str(a) for a in argv)
        if any(has_nul(a) for a in argv):
            raise SpecError(f"task {name or argv[0]!r}: a command argument cannot contain a NUL "
                            "byte", source=self._where())
        options.setdefault("cwd", self.defaults["cwd"] or self.root)
        task = self._add(Path(argv[0]).stem if name is None else name, command=argv,
                         upstream=upstream, product=product,
                         hooks={"on_failure": on_failure, "on_success": on_success,
                                "on_retry": on_retry}, options=options)
        assert isinstance(task, Task)  # a command has no grid
        return task

    def _add(self, name: str, *, notebook: Path | None = None,
             command: tuple[str, ...] | None = None, upstream: Iterable, parameters=None,
             grid=None, product=None, hooks: dict, options: dict) -> Task | Grid:
        problem = check_task_name(name, f"task {name!r}")
        if problem:
            raise SpecError(problem, source=self._where())
        if name in self.tasks:
            other = self.tasks[name].grid
            raise SpecError(f"task name {name!r} is already instance {name!r} of grid {other!r}"
                            if other else
                            f"duplicate task name {name!r} (task names default to the notebook's "
                            "file stem; pass name= to tell them apart)", source=self._where())
        if name in self.grids:
            raise SpecError(f"duplicate task name {name!r}: it is already the name of a grid "
                            f"(whose instances are {name}-0, {name}-1, ...)", source=self._where())
        unknown = set(options) - set(TASK_DEFAULTS)
        if unknown:
            raise SpecError(f"task {name!r}: unknown option(s) {', '.join(sorted(unknown))}",
                            source=self._where())
        converted, problems = normalize_options(options, f"task {name!r}")
        problems += parameter_name_problems(parameters or {}, f"task {name!r}")
        if product is not None:
            problems += check_product(product, f"task {name!r}")
        if problems:
            raise SpecError(problems, source=self._where())
        settings = {**self.defaults, **converted}
        if settings["cwd"] is not None:
            settings["cwd"] = (self.root / Path(settings["cwd"])).resolve()
        settings["secrets"] = tuple(dict.fromkeys(self.secrets + tuple(settings["secrets"])))
        ups = self.expand(u.name if isinstance(u, (Task, Grid)) else str(u) for u in upstream)
        try:
            hooks = read_hooks(hooks, f"task {name!r}")
        except SpecError as exc:
            raise SpecError(exc.problems, source=self._where()) from None
        task = Task(name=name, notebook=notebook, upstream=ups, parameters=dict(parameters or {}),
                    hooks=hooks, command=command, product=product, **settings)
        if grid is not None:
            return self._add_grid(task, grid)
        self.tasks[name] = task
        return task

    def _add_grid(self, base: Task, grid: Any) -> Grid:
        """Add one task per combination of ``grid``, named ``NAME-0``, ``NAME-1``, ...
        (or as a ``GridInstances`` names them)."""
        name, where = base.name, f"task {base.name!r}"
        named = isinstance(grid, GridInstances)
        if not named:
            try:
                combinations = grid_combinations(grid, where, self.allow_large_grid)
            except SpecError as exc:
                raise SpecError(exc.problems, source=self._where()) from None
            grid = GridInstances(tuple((f"{name}-{i}", combination, base.product)
                                       for i, combination in enumerate(combinations)))
        both = [k for k in grid.instances[0][1] if k in base.parameters]
        if both:
            raise SpecError(f"{where}: {', '.join(map(repr, both))} set in both 'parameters' and "
                            "'grid'; give each parameter in one of them", source=self._where())
        names = [instance[0] for instance in grid.instances]
        taken = [n for n in names if n in self.tasks]
        if taken:
            raise SpecError(f"{where}: grid instance name {taken[0]!r} collides with task "
                            f"{taken[0]!r}; rename the grid or that task", source=self._where())
        instances = tuple(replace(base, name=n, product=product, grid=name, parameters=(
                                      {**combination, **base.parameters} if named  # Ploomber's
                                      else {**base.parameters, **combination}))    # order
                          for n, combination, product in grid.instances)
        self.tasks.update((t.name, t) for t in instances)
        self.grids[name] = tuple(names)
        for other, task in self.tasks.items():  # earlier tasks that named this grid upstream
            if name in task.upstream:
                self.tasks[other] = replace(task, upstream=self.expand(task.upstream))
        return Grid(name, instances)

    def expand(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` with each grid name replaced by its instances' names."""
        out: list[str] = []
        for name in names:
            out += self.grids.get(name, (name,))
        return tuple(dict.fromkeys(out))

    def add_upstream(self, name: str, extra: Iterable[str]) -> None:
        """Add edges (from a notebook's own ``upstream = [...]`` declaration)."""
        task = self.tasks[name]
        self.tasks[name] = replace(task, upstream=self.expand(task.upstream + tuple(extra)))

    def listing(self) -> str:
        """The task names for a message: a grid as ``NAME-0..NAME-99`` rather than 100 names."""
        shown: list[str] = []
        for name, task in self.tasks.items():
            if task.grid is None:
                shown.append(name)
            elif name == self.grids[task.grid][0]:
                shown.append(f"{name}..{self.grids[task.grid][-1]} (grid {task.grid!r})")
        return ", ".join(shown)

    def _where(self) -> str | None:
        return str(self.source) if self.source else None

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, tasks={list(self.tasks)})"
