"""Turn a pipeline file into a ``Pipeline``: YAML parsing with line numbers, key checks."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError
from .model import TASK_DEFAULTS, Pipeline, check_task_name, normalize_options

PIPELINE_KEYS = ("name", "parameters", "defaults", "tasks", "schedule", "secrets",
                 "on_failure", "on_success", "on_retry")
TASK_KEYS = ("notebook", "command", "upstream", "parameters", "product", "grid", "resources",
             "on_failure", "on_success", "on_retry", *TASK_DEFAULTS)
SCHEDULE_KEYS = ("cron", "timezone", "catchup", "max_active_runs")
NOT_YET = {  # keys of the SPEC that this version does not run yet
    "command": "command tasks",
    "product": "declared products",
    "grid": "parameter grids",
    "resources": "worker resources (Dask executor)",
    "on_failure": "hooks", "on_success": "hooks", "on_retry": "hooks",
}


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""
    lines: dict


class _Loader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps (``2026-01-01`` stays a string, as a
    notebook parameter expects) and with duplicate keys as errors."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    result = _Mapping()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {result.lines[key]})",
                key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml_text(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = exc.problem or exc.context or str(exc)
        if exc.context and exc.context_mark and exc.problem_mark and \
                exc.context_mark.line != exc.problem_mark.line:
            # e.g. an unclosed quote: the parser notices at the end, the cause is where it began
            what += f" ({exc.context} that starts at line {exc.context_mark.line + 1})"
        raise SpecError(f"invalid YAML at {line}{what}", source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", source=source) from None


def parse_scalar(text: str) -> Any:
    """Read ``-p KEY=VALUE`` values as YAML scalars: ``4`` is 4, ``true`` is True."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text


def _line(mapping: Any, key: str) -> str:
    lines = getattr(mapping, "lines", {})
    return f" (line {lines[key]})" if key in lines else ""


def unknown_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> list[str]:
    problems = []
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
            problems.append(f"{where}: unknown key {key!r}{_line(mapping, key)}{hint}")
    return problems


def load(path: str | Path) -> Pipeline:
    """A pipeline from a YAML file."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path} is a folder; pipelines from a folder are not supported yet, "
                        "name its pipeline.yaml")
    return load_yaml(path)


def load_yaml(path: str | Path) -> Pipeline:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("pipeline file not found", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read pipeline file: {exc}", source=source) from None
    return from_mapping(parse_yaml_text(text, source), source=path)


def from_mapping(data: Any, source: Path, default_name: str | None = None) -> Pipeline:
    """Build a Pipeline from parsed YAML, collecting every problem before raising."""
    where = str(source)
    if not isinstance(data, dict):
        raise SpecError("a pipeline file must be a YAML mapping with at least 'name' and 'tasks'",
                        source=where)
    problems = unknown_keys(data, PIPELINE_KEYS, "pipeline")
    problems += [f"{NOT_YET[k]} ({k}{_line(data, k)}) are not supported by this version of nborch"
                 for k in data if k in NOT_YET]
    name = data.get("name", default_name)
    if name is None:
        problems.append("pipeline: missing 'name'")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        problems.append(f"pipeline: 'parameters'{_line(data, 'parameters')} must be a mapping")
        parameters = {}
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"pipeline: 'defaults'{_line(data, 'defaults')} must be a mapping")
        defaults = {}
    problems += unknown_keys(defaults, tuple(TASK_DEFAULTS), "defaults")
    schedule = data.get("schedule")
    if schedule is not None:
        problems += _check_schedule(schedule, data)
    secrets = data.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        problems.append(f"pipeline: 'secrets'{_line(data, 'secrets')} must be a list of "
                        "environment variable names")
        secrets = []
    tasks = data.get("tasks")
    if isinstance(tasks, list) and any(isinstance(t, dict) and "source" in t for t in tasks):
        raise SpecError("this looks like a Ploomber pipeline (a list of tasks with 'source' and "
                        "'product'); running Ploomber projects is not supported by this version "
                        "of nborch", source=where)
    if not isinstance(tasks, dict) or not tasks:
        problems.append(f"pipeline: 'tasks'{_line(data, 'tasks')} must be a mapping of task names "
                        "to task definitions")
        tasks = {}
    # Keep going after a problem, so one message lists them all.
    options, default_problems = normalize_options(
        {k: v for k, v in defaults.items() if k in TASK_DEFAULTS}, "defaults")
    problems += default_problems
    try:
        pipeline = Pipeline(name if name is not None else "pipeline", parameters=parameters,
                            secrets=secrets, schedule=schedule, source=source, **options)
    except SpecError as exc:
        problems += exc.problems
        pipeline = Pipeline("pipeline", parameters=parameters, secrets=secrets, source=source)
    for task_name, spec in tasks.items():
        here = f"task {task_name!r}{_line(tasks, task_name)}"
        problem = check_task_name(task_name, here)
        if problem:
            problems.append(problem)
            continue
        if not isinstance(spec, dict):
            problems.append(f"{here}: must be a mapping with at least 'notebook'")
            continue
        task_problems = unknown_keys(spec, TASK_KEYS, here)
        task_problems += [f"{here}: {NOT_YET[k]} ({k}{_line(spec, k)}) are not supported by this "
                          "version of nborch" for k in spec if k in NOT_YET and k != "command"]
        has_nb, has_cmd = "notebook" in spec, "command" in spec
        if has_nb == has_cmd:
            task_problems.append(f"{here}: give exactly one of 'notebook' and 'command'"
                                 + (", not both" if has_nb else ""))
        elif has_cmd:
            task_problems.append(f"{here}: command tasks are not supported by this version of nborch")
        elif not isinstance(spec["notebook"], str) or not spec["notebook"]:
            task_problems.append(f"{here}: 'notebook' must be a path")
        upstream = spec.get("upstream") or []
        if isinstance(upstream, str):
            upstream = [upstream]
        if not isinstance(upstream, list) or not all(isinstance(u, str) for u in upstream):
            task_problems.append(f"{here}: 'upstream' must be a list of task names")
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            task_problems.append(f"{here}: 'parameters' must be a mapping")
        if task_problems:
            problems += task_problems
            continue
        options = {k: v for k, v in spec.items() if k in TASK_DEFAULTS}
        try:
            pipeline.notebook(spec["notebook"], name=task_name, upstream=upstream,
                              parameters=params, **options)
        except SpecError as exc:
            problems += [f"{p}{_line(tasks, task_name)}" if p.startswith("task") else p
                         for p in exc.problems]
    if problems:
        raise SpecError(problems, source=where)
    return pipeline


def _check_schedule(schedule: Any, data: dict) -> list[str]:
    where = f"schedule{_line(data, 'schedule')}"
    if not isinstance(schedule, dict):
        return [f"{where}: must be a mapping with 'cron'"]
    problems = unknown_keys(schedule, SCHEDULE_KEYS, where)
    cron = schedule.get("cron")
    if not isinstance(cron, str):
        problems.append(f"{where}: 'cron' must be a cron expression such as \"0 6 * * *\"")
    else:
        from croniter import croniter
        if not croniter.is_valid(cron):
            problems.append(f"{where}: bad cron expression {cron!r} (five fields: minute hour "
                            "day-of-month month day-of-week)")
    tz = schedule.get("timezone")
    if tz is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"{where}: unknown timezone {tz!r} (use an IANA name like Europe/Berlin)")
    return problems
