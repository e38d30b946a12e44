"""Ploomber's ``{{placeholders}}``: the env file (found as Ploomber finds it) and the default
placeholders, the context every value of ``pipeline.yaml`` is rendered with."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ...core.errors import SpecError
from ..templating import render, template_error

ENV_VARIABLE = "PLOOMBER_ENV_FILENAME"


def spec_name(source: Path) -> str | None:
    """``NAME`` of ``pipeline.NAME.yaml`` (of any ``something.NAME.ext``), as Ploomber reads it."""
    parts = Path(source).name.split(".")
    return parts[1] if len(parts) >= 3 else None


def env_path(source: Path, problems: list[str]) -> Path | None:
    """The env file Ploomber loads for ``source``: ``$PLOOMBER_ENV_FILENAME`` when set (a file
    name; a missing file is a problem), else ``env.NAME.yaml`` for ``pipeline.NAME.yaml``,
    else ``env.yaml``; each looked up in the current folder first, then beside the spec."""
    chosen = os.environ.get(ENV_VARIABLE)
    if chosen and len(Path(chosen).parts) > 1:
        problems.append(f"{ENV_VARIABLE}={chosen!r} must be a file name (such as env.cron.yaml), "
                        "not a path: put the file beside pipeline.yaml or in the current folder")
        return None
    name = spec_name(source)
    names = [chosen] if chosen else ([f"env.{name}.yaml"] if name else []) + ["env.yaml"]
    for filename in names:
        for folder in (Path.cwd(), source.parent):
            if (folder / filename).is_file():
                return (folder / filename).resolve()
    if chosen:
        problems.append(f"{ENV_VARIABLE}={chosen!r}, but there is no such file in the current "
                        f"folder ({Path.cwd()}) nor beside the spec ({source.parent})")
    else:
        yml = f"env.{name}.yml" if name else "env.yml"
        if any((folder / yml).is_file() for folder in (Path.cwd(), source.parent)):
            problems.append(f"{yml}: an env file must end in .yaml, as Ploomber wants it; "
                            "rename it")
    return None


def defaults(root: Path) -> dict:
    """Ploomber's default placeholders."""
    project = next((p for p in [root, *root.parents] if (p / "setup.py").is_file()), root)
    return {"here": str(root), "cwd": str(Path.cwd().resolve()), "root": str(project),
            "user": getpass.getuser(), "now": datetime.now().isoformat(),
            "env": dict(os.environ)}


def context(source: Path, problems: list[str],
            parse: Callable[[str, str], Any]) -> tuple[dict, Path | None]:
    """The placeholders' values: the defaults, then the env file's keys (each may use the
    defaults and the keys before it, as in Ploomber 0.20+), and the env file read (with
    ``parse(text, source)``, the YAML reader)."""
    base = defaults(source.parent)
    path = env_path(source, problems)
    if path is None:
        return base, None
    try:
        env = parse(path.read_text(encoding="utf-8"), str(path))
    except SpecError as exc:
        problems.extend(exc.problems)
        return base, path
    except OSError as exc:
        problems.append(f"cannot read {path}: {exc}")
        return base, path
    if env is None:
        return base, path
    if not isinstance(env, dict):
        problems.append(f"{path}: must be a mapping of names to values")
        return base, path
    values = dict(base)
    for key, value in env.items():
        try:
            values[key] = render(value, values)
        except Exception as exc:  # jinja2 errors of every kind
            problems.append(f"{path.name}: {key}: {placeholder_error(exc, None)}")
    return values, path


def placeholder_error(exc: Exception, path: Path | None) -> str:
    text = template_error(exc)
    if re.search(r"'git(_hash)?' is undefined", str(exc)):
        return (f"{text}: the {{{{git}}}} and {{{{git_hash}}}} placeholders are not supported; "
                "define the value in the env file")
    where = path.name if path else "env.yaml (there is none beside pipeline.yaml)"
    return f"{text}; define it in {where}"


def pipeline_name(source: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.parent.name) or "pipeline"
    parts = source.name.split(".")
    return f"{name}.{parts[1]}" if len(parts) == 3 and parts[0] == "pipeline" else name
