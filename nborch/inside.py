"""What a task notebook calls: ``nborch.publish``, ``nborch.artifact_path``, ``nborch.secret``.

Kept free of heavy imports: it is imported inside every task's kernel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PUBLISH_MIME = "application/vnd.nborch.publish+json"
_published: dict[str, Any] = {}


def publish(name: str, value: Any) -> None:
    """Publish a JSON-serialisable ``value`` under ``name`` for downstream tasks and the run record.

    In a notebook the value is recorded as an output of the cell that calls this, so it
    travels with the executed notebook; outside an nborch run it is only recorded there.
    In a command task (a Python script, or ``nborch publish``) it goes to the file the
    task's runner reads.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"nborch.publish: name must be a non-empty string, not {name!r}")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"nborch.publish({name!r}, ...): the value is not JSON-serialisable ({exc}); "
            "convert it first, e.g. int(x), float(x), str(x), x.tolist() or df.to_dict()") from None
    from .execution.limits import ValueTooLarge, max_value
    if len(encoded) > (limit := max_value()):
        raise ValueTooLarge(name, len(encoded), limit)
    _published[name] = value
    values_file = os.environ.get("NBORCH_VALUES_FILE")
    if values_file:  # set for command tasks only
        with open(values_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"name": name, "value": value}) + "\n")
        return
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    display({PUBLISH_MIME: {"name": name, "value": value},
             "text/plain": publish_preview(name, value)}, raw=True)


def publish_preview(name: str, value: Any) -> str:
    """The text a published value shows in a notebook (shortened to 200 characters)."""
    shown = repr(value)
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return f"nborch: published {name} = {shown}"


def artifact_path(name: str) -> Path:
    """A path for a file this task produces, in a per-run, per-task folder (created).

    Outside an nborch run the folder is ``nborch_artifacts/`` in the current folder.
    """
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"nborch.artifact_path: {name!r} must be a relative path inside the "
                         "task's artifact folder")
    folder = os.environ.get("NBORCH_ARTIFACT_DIR")
    path = Path(folder or "nborch_artifacts") / name
    if folder:  # in the run's folder, which is its owner's only (see private.py)
        from .core.private import makedirs
        makedirs(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def secret(name: str) -> str:
    """The value of a secret declared in the pipeline's ``secrets:`` list."""
    try:
        return os.environ[name]
    except KeyError:
        raise KeyError(f"secret {name!r} is not set; declare it under 'secrets:' in the pipeline "
                       "and set it in the environment or a .env file beside the pipeline") from None
