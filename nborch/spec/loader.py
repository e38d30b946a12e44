"""Turn a pipeline file, a folder of notebooks or ``%%orchestrate`` arrows into a ``Pipeline``,
checked key by key (the YAML itself is read by ``yamltext``, with line numbers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.errors import SpecError
from ..core.hooks import EVENTS, TASK_EVENTS
from ..core.model import Pipeline
from ..core.task import TASK_DEFAULTS, check_task_name, has_nul, normalize_options
from .schedule_block import check_schedule
from .yamltext import key_line, parse_yaml_text, unknown_keys

PIPELINE_KEYS = ("name", "parameters", "defaults", "tasks", "schedule", "secrets", *EVENTS,
                 "run_timeout", "executor")
TASK_KEYS = ("notebook", "command", "upstream", "parameters", "product", "grid", "resources",
             *TASK_EVENTS, *TASK_DEFAULTS)


def load(path: str | Path, *, allow_large_grid: bool = False) -> Pipeline:
    """A pipeline from a YAML file, or from a folder (its ``pipeline.yaml`` if it has one,
    else one task per notebook, with edges from each notebook's ``upstream = [...]``).
    ``allow_large_grid`` lets a grid have more than ``MAX_GRID`` instances."""
    _check_path(path)
    path = Path(path)
    if path.is_dir():
        for name in ("pipeline.yaml", "pipeline.yml"):
            if (path / name).is_file():
                return load_yaml(path / name, allow_large_grid=allow_large_grid)
        return from_folder(path)
    if path.suffix.lower() == ".py":
        raise SpecError(_python_file(path), source=str(path))
    return load_yaml(path, allow_large_grid=allow_large_grid)


def _python_file(path: Path) -> str:
    """Why a ``.py`` file is not a pipeline (Ploomber's Python API is the usual one)."""
    try:
        ploomber = re.search(r"^\s*(from|import)\s+ploomber\b", path.read_text(encoding="utf-8"),
                             re.M) is not None
    except (OSError, UnicodeDecodeError):
        ploomber = False
    what = ("a pipeline built with Ploomber's Python API is not supported: list its tasks in a "
            "Ploomber pipeline.yaml (tasks: [{source: ..., product: ...}]), which nborch runs "
            "unchanged, or in nborch's own format" if ploomber else
            "nborch reads a pipeline from a YAML file (pipeline.yaml) or a folder of notebooks, "
            "not from a Python file")
    return f"{path.name}: {what}"


def from_folder(folder: Path) -> Pipeline:
    folder = folder.resolve()
    from .notebooks import looks_like_script_notebook
    notebooks = sorted(p for p in [*folder.glob("*.ipynb"),
                                   *filter(looks_like_script_notebook, folder.glob("*.py"))]
                       if not p.name.startswith((".", "_")) and not p.stem.endswith("-checkpoint"))
    if not notebooks:
        raise SpecError("no notebooks (*.ipynb, or *.py with jupytext '# %%' cells) in this "
                        "folder", source=str(folder))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name) or "pipeline"
    pipeline = Pipeline(name, root=folder)
    pipeline.source = folder
    problems = []
    for notebook in notebooks:
        try:
            pipeline.notebook(notebook.name)
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems, source=str(folder))
    return pipeline


def _check_path(path: str | Path) -> None:
    if has_nul(path):
        raise SpecError(f"pipeline path {str(path)!r} contains a NUL byte")


def load_yaml(path: str | Path, *, allow_large_grid: bool = False) -> Pipeline:
    _check_path(path)
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("pipeline file not found", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read pipeline file: {exc}", source=source) from None
    return from_mapping(parse_yaml_text(text, source), source=path,
                        allow_large_grid=allow_large_grid)


def from_mapping(data: Any, source: Path, default_name: str | None = None, *,
                 allow_large_grid: bool = False) -> Pipeline:
    """Build a Pipeline from parsed YAML, collecting every problem before raising."""
    where = str(source)
    from .ploomber.conventions import looks_like_ploomber
    if looks_like_ploomber(data):
        from .ploomber.reader import load as load_ploomber
        return load_ploomber(data, source, allow_large_grid=allow_large_grid)
    if not isinstance(data, dict):
        raise SpecError("a pipeline file must be a YAML mapping with at least 'name' and 'tasks'",
                        source=where)
    problems = unknown_keys(data, PIPELINE_KEYS, "pipeline")
    name = data.get("name", default_name)
    if name is None:
        problems.append("pipeline: missing 'name'")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        problems.append(f"pipeline: 'parameters'{key_line(data, 'parameters')} must be a mapping")
        parameters = {}
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"pipeline: 'defaults'{key_line(data, 'defaults')} must be a mapping")
        defaults = {}
    problems += unknown_keys(defaults, tuple(TASK_DEFAULTS), "defaults")
    schedule = data.get("schedule")
    if schedule is not None:
        problems += check_schedule(schedule, f"schedule{key_line(data, 'schedule')}")
    secrets = data.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        problems.append(f"pipeline: 'secrets'{key_line(data, 'secrets')} must be a list of "
                        "environment variable names")
        secrets = []
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        problems.append(f"pipeline: 'tasks'{key_line(data, 'tasks')} must be a mapping of "
                        "task names to task definitions")
        tasks = {}
    # Keep going after a problem, so one message lists them all.
    options, default_problems = normalize_options(
        {k: v for k, v in defaults.items() if k in TASK_DEFAULTS}, "defaults")
    problems += default_problems
    try:
        pipeline = Pipeline(name if name is not None else "pipeline", parameters=parameters,
                            secrets=secrets, schedule=schedule, source=source,
                            allow_large_grid=allow_large_grid, run_timeout=data.get("run_timeout"),
                            executor=data.get("executor"),
                            **{k: data.get(k) for k in EVENTS}, **options)
    except SpecError as exc:
        problems += exc.problems
        pipeline = Pipeline("pipeline", parameters=parameters, secrets=secrets, source=source,
                            allow_large_grid=allow_large_grid)
    for task_name, spec in tasks.items():
        here = f"task {task_name!r}{key_line(tasks, task_name)}"
        problem = check_task_name(task_name, here)
        if problem:
            problems.append(problem)
            continue
        if not isinstance(spec, dict):
            problems.append(f"{here}: must be a mapping with at least 'notebook'")
            continue
        task_problems = unknown_keys(spec, (*TASK_KEYS, "on_sla_miss"), here)
        if "on_sla_miss" in spec:
            task_problems.append(f"{here}: 'on_sla_miss'{key_line(spec, 'on_sla_miss')} is a "
                                 "pipeline's hook (a scheduled slot misses its SLA, not a "
                                 "task): declare it at the pipeline's top level")
        has_nb, has_cmd = "notebook" in spec, "command" in spec
        if has_nb == has_cmd:
            task_problems.append(f"{here}: give exactly one of 'notebook' and 'command'"
                                 + (", not both" if has_nb else ""))
        elif has_nb and (not isinstance(spec["notebook"], str) or not spec["notebook"]):
            task_problems.append(f"{here}: 'notebook' must be a path")
        elif has_cmd:
            task_problems += [f"{here}: '{k}'{key_line(spec, k)} is for notebook tasks; a command "
                              "gets its values in its arguments ({{ params.NAME }})"
                              for k in ("parameters", "grid", "kernel") if k in spec]
        upstream = spec.get("upstream") or []
        if isinstance(upstream, str):
            upstream = [upstream]
        if not isinstance(upstream, list) or not all(isinstance(u, str) for u in upstream):
            task_problems.append(f"{here}: 'upstream' must be a list of task names")
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            task_problems.append(f"{here}: 'parameters' must be a mapping")
        if "grid" in spec and spec["grid"] is None:
            task_problems.append(f"{here}: 'grid'{key_line(spec, 'grid')} is empty; give a mapping "
                                 "from parameter names to lists of values")
        if task_problems:
            problems += task_problems
            continue
        options = {k: v for k, v in spec.items() if k in TASK_DEFAULTS}
        common = {"name": task_name, "upstream": upstream, "product": spec.get("product"),
                  **{k: spec.get(k) for k in TASK_EVENTS}, **options}
        try:
            if has_cmd:
                pipeline.command(spec["command"], **common)
            else:
                pipeline.notebook(spec["notebook"], parameters=params, grid=spec.get("grid"),
                                  **common)
        except SpecError as exc:
            problems += [f"{p}{key_line(tasks, task_name)}" if p.startswith("task") else p
                         for p in exc.problems]
    if problems:
        raise SpecError(problems, source=where)
    return pipeline


ARROW_SUFFIXES = (".ipynb", ".py")


def from_arrows(text: str, root: Path, name: str) -> Pipeline:
    """A pipeline from the arrow form of ``%%orchestrate``: one chain per line,
    ``a.ipynb >> b.ipynb >> c.ipynb``; a line may name a single notebook; blank lines and
    ``#`` comments are skipped. Paths are relative to ``root``; task names are file stems, and
    a notebook named on several lines is one task. Every problem names its line (1-based).
    """
    root = Path(root)
    order: dict[Path, str] = {}              # notebook -> task name, in order of appearance
    where: dict[str, tuple[str, int]] = {}   # task name -> (path as written, first line)
    upstream: dict[Path, list[Path]] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        here = f"line {number}: {raw.strip()!r}"
        parts = [part.strip() for part in line.split(">>")]
        if has_nul(line):
            problems.append(f"{here}: a notebook path cannot contain a NUL byte")
            continue
        if any(not part for part in parts):
            problems.append(f"{here}: a notebook path is missing around '>>'")
            continue
        bad = next((p for p in parts if not p.endswith(ARROW_SUFFIXES)
                    or any(c in p for c in "<>|,;") or ".ipynb " in p), None)
        if bad is not None:
            if bad.endswith(ARROW_SUFFIXES) or ".ipynb" in bad:
                problems.append(f"{here}: {bad!r} is not one notebook path; put '>>' between "
                                "notebooks")
            else:
                problems.append(f"{here}: {bad!r} is not a notebook path ending in .ipynb")
            continue
        chain = []
        for part in parts:
            notebook = (root / part).resolve()
            task = notebook.stem
            if notebook not in order:
                if task in where:
                    other, first = where[task]
                    problems.append(f"{here}: {part!r} and {other!r} (line {first}) would both be "
                                    f"task {task!r}; task names are file stems, so rename one "
                                    "or use a YAML body")
                    continue
                problem = check_task_name(task, here)
                if problem:
                    problems.append(problem)
                    continue
                order[notebook] = task
                where[task] = (part, number)
                upstream[notebook] = []
            chain.append(notebook)
        for before, after in zip(chain, chain[1:]):
            if before not in upstream[after]:
                upstream[after].append(before)
    if not problems and not order:
        problems.append("no notebooks: write one chain per line, such as "
                        "'extract.ipynb >> clean.ipynb >> report.ipynb'")
    if problems:
        raise SpecError(problems)
    pipeline = Pipeline(name, root=root)
    for notebook in _dependency_order(list(order), upstream):
        pipeline.notebook(notebook, name=order[notebook],
                          upstream=[order[u] for u in upstream[notebook]])
    return pipeline


def _dependency_order(nodes: list, upstream: dict) -> list:
    """``nodes`` with every node after its upstream ones, otherwise in their given order
    (so tables read in running order); a cycle keeps the given order (validation reports it)."""
    done: list = []
    placed: set = set()
    while len(done) < len(nodes):
        ready = next((n for n in nodes if n not in placed
                      and all(u in placed for u in upstream[n])), None)
        if ready is None:
            return nodes
        done.append(ready)
        placed.add(ready)
    return done
