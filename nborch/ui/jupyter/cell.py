"""The body of an ``%%orchestrate`` cell: what kind it is, the pipeline it describes, the
lines a problem points at, and the pipeline file ``--schedule`` writes from it."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from ...core.errors import NborchError, SpecError
from ...core.model import Pipeline
from ...core.task import NAME_RE

YAML_KEY_RE = re.compile(r"^[A-Za-z_][\w.-]*\s*:(\s|$)")
LINE_RE = re.compile(r"\bline (\d+)\b")
TASK_RE = re.compile(r"\btask '([^']+)'")


def marked_lines(problems: list[str], body: str) -> set[int]:
    """Body lines (1-based) that the problems point at: by line number or by task name."""
    marks = {int(m) for p in problems for m in LINE_RE.findall(p)}
    lines = body.splitlines()
    for task in {t for p in problems if not LINE_RE.search(p) for t in TASK_RE.findall(p)}:
        pattern = re.compile(rf"(^|[\s/>]){re.escape(task)}\.(ipynb|py)\b"
                             rf"|^\s*{re.escape(task)}\s*:")
        marks |= {n + 1 for n, line in enumerate(lines) if pattern.search(line)}
    return {m for m in marks if 1 <= m <= len(lines)}


def notebook_stem(user_ns: dict) -> str:
    """The controlling notebook's file stem, made a valid pipeline name; else "notebook"."""
    session = (os.environ.get("JPY_SESSION_NAME") or user_ns.get("__session__")
               or user_ns.get("__vsc_ipynb_file__") or "")
    stem = Path(str(session)).stem if session else ""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.")
    return stem or "notebook"


def unquote(value: str) -> str:
    """IPython's magic argument parser keeps quotes: ``--schedule '0 6 * * *'``."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def body_kind(body: str, root: Path) -> str:
    """``arrows``, ``yaml`` (a pipeline in the cell) or ``file`` (one line naming a YAML file
    or a folder of notebooks, read as ``nborch run`` reads it)."""
    lines = [ln.strip() for ln in body.splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    if any(">>" in ln for ln in lines):
        return "arrows"
    if len(lines) == 1 and (lines[0].endswith((".yaml", ".yml", "/"))
                            or (root / lines[0]).is_dir()):
        return "file"
    if lines and YAML_KEY_RE.match(lines[0]):
        return "yaml"
    return "arrows"


def read_body(body: str, root: Path, default_name: str, name: str | None,
              params: dict) -> Pipeline:
    """The pipeline a cell body describes; ``params`` are the -p values (checked here for
    the arrow form, whose notebooks declare them; a YAML pipeline declares its own)."""
    from ...spec import loader as spec
    from ...spec.yamltext import parse_yaml_text
    kind = body_kind(body, root)
    if kind == "file":
        pipeline = spec.load(root / body.strip())
    elif kind == "yaml":
        data = parse_yaml_text(body, source="the cell")
        pipeline = spec.from_mapping(data, source=root / "%%orchestrate", default_name=default_name)
    else:
        pipeline = spec.from_arrows(body, root, name or default_name)
        if params:
            arrow_parameters(pipeline, params)
    if name is not None and pipeline.name != name:
        if not NAME_RE.fullmatch(name):
            raise SpecError(f"--name {name!r}: a pipeline name may only use letters, digits, "
                            "'_', '.' and '-'")
        pipeline.name = name
    return pipeline


def arrow_parameters(pipeline: Pipeline, params: dict) -> None:
    """-p for the arrow form: each value goes to every notebook whose parameters cell
    declares that name. A name no notebook declares is an error."""
    from ...spec.notebooks import inspect_notebook
    pipeline.parameters.update(params)
    used: set[str] = set()
    complete = True
    for name, task in list(pipeline.tasks.items()):
        try:
            declared = inspect_notebook(task.notebook).parameters
        except NborchError:
            complete = False  # validation names the unreadable notebook
            continue
        mine = {key: "{{ params." + key + " }}" for key in params if key in declared}
        if mine:
            pipeline.tasks[name] = replace(task, parameters={**task.parameters, **mine})
            used |= set(mine)
    unused = [key for key in params if key not in used]
    if unused and complete:
        raise SpecError([f"-p {key}: no notebook of the cell declares {key!r} in its parameters "
                         "cell" for key in unused])


GENERATED = "# written by %%orchestrate --schedule from a notebook cell; edits are kept\n"


def pipeline_document(pipeline: Pipeline, body: str, root: Path, params: dict) -> str:
    """The cell's pipeline as a YAML file in ``root``: a YAML body as it is, the arrow form
    as tasks with their notebooks (relative to ``root``) and upstream tasks."""
    import yaml
    if body_kind(body, root) == "yaml":
        return body if body.endswith("\n") else body + "\n"
    tasks = {}
    for name, task in pipeline.tasks.items():
        entry: dict = {"notebook": os.path.relpath(task.notebook, root)}
        if task.upstream:
            entry["upstream"] = list(task.upstream)
        if task.parameters:
            entry["parameters"] = dict(task.parameters)
        tasks[name] = entry
    doc = {"name": pipeline.name, **({"parameters": params} if params else {}), "tasks": tasks}
    return yaml.safe_dump(doc, sort_keys=False)


def write_pipeline_file(path: Path, text: str) -> None:
    """Write a generated pipeline file; never over a file the user wrote."""
    if path.exists() and not path.read_text(encoding="utf-8").startswith(GENERATED):
        raise NborchError(f"{path.name} exists and was not written by %%orchestrate "
                          "--schedule; rename it, or schedule it with `nborch schedule add`")
    path.write_text(GENERATED + text, encoding="utf-8")
