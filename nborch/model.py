"""Pipeline and Task: the validated shape of a pipeline, whatever it was written in.

``Pipeline`` is also the Python API's builder (``p.notebook(...)``); each ``Task`` is a
frozen value, so nothing downstream of the spec can change a task behind the engine's back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .errors import SpecError
from .templating import parse_duration

if TYPE_CHECKING:
    from .run import Run

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
TRIGGERS = ("all_success", "all_done", "one_failed")
BACKOFFS = ("constant", "exponential")

# Options a task may set itself or inherit from the pipeline's defaults, with their defaults.
TASK_DEFAULTS: dict[str, Any] = {
    "retries": 0,
    "retry_delay": 10.0,
    "retry_backoff": "constant",
    "max_retry_delay": 3600.0,
    "timeout": None,
    "kernel": None,
    "trigger": "all_success",
    "cwd": None,
    "env": {},
    "secrets": (),
}
DURATION_OPTIONS = ("retry_delay", "max_retry_delay", "timeout")


@dataclass(frozen=True)
class Task:
    name: str
    notebook: Path
    upstream: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)
    retries: int = 0
    retry_delay: float = 10.0
    retry_backoff: str = "constant"
    max_retry_delay: float = 3600.0
    timeout: float | None = None
    kernel: str | None = None
    trigger: str = "all_success"
    cwd: Path | None = None
    env: dict = field(default_factory=dict)
    secrets: tuple[str, ...] = ()

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 is the first retry)."""
        delay = self.retry_delay
        if self.retry_backoff == "exponential":
            delay = self.retry_delay * 2 ** (attempt - 2)
        return min(delay, self.max_retry_delay)

    @property
    def workdir(self) -> Path:
        """Where the task's kernel runs: its notebook's folder unless ``cwd`` says otherwise."""
        return self.cwd or self.notebook.parent


def normalize_options(options: dict, where: str) -> tuple[dict, list[str]]:
    """Check and convert task options (durations to seconds, lists to tuples).

    Returns the converted options and a list of problems, each naming ``where``.
    """
    out, problems = {}, []
    for key, value in options.items():
        try:
            if key in DURATION_OPTIONS:
                value = None if value is None else parse_duration(value)
            elif key == "retries":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"retries must be a whole number >= 0, not {value!r}")
            elif key == "trigger" and value not in TRIGGERS:
                raise ValueError(f"unknown trigger {value!r}; use one of {', '.join(TRIGGERS)}")
            elif key == "retry_backoff" and value not in BACKOFFS:
                raise ValueError(f"unknown retry_backoff {value!r}; use one of {', '.join(BACKOFFS)}")
            elif key == "secrets":
                if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
                        not all(isinstance(v, str) for v in value):
                    raise ValueError(f"secrets must be a list of environment variable names, not {value!r}")
                value = tuple(value)
            elif key == "env":
                if not isinstance(value, dict):
                    raise ValueError(f"env must be a mapping of names to values, not {value!r}")
                value = {str(k): str(v) for k, v in value.items()}
            elif key == "kernel" and value is not None and not isinstance(value, str):
                raise ValueError(f"kernel must be a kernel name, not {value!r}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        out[key] = value
    return out, problems


def check_task_name(name: Any, where: str) -> str | None:
    """A problem with a task name, or None."""
    if not isinstance(name, str) or not name:
        return f"{where}: task name must be a non-empty string, not {name!r}"
    if "/" in name or "\\" in name or ".." in name:
        return f"{where}: task name {name!r} must not contain a path separator or '..'"
    if not NAME_RE.match(name):
        return f"{where}: task name {name!r} may only use letters, digits, '_', '.' and '-'"
    return None


class Pipeline:
    """A named DAG of notebook tasks.

    Build one in Python::

        p = Pipeline("daily_sales", retries=2)
        extract = p.notebook("extract.ipynb", parameters={"day": "{{ ds }}"})
        p.notebook("clean.ipynb", upstream=[extract])
        run = p.run(max_parallel=4)

    or load one with ``Pipeline.from_yaml(path)`` / ``Pipeline.load(path_or_folder)``.
    """

    def __init__(self, name: str, *, parameters: dict | None = None, secrets: Sequence[str] = (),
                 schedule: dict | None = None, source: str | Path | None = None,
                 root: str | Path | None = None, **defaults: Any):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SpecError(f"pipeline name {name!r} may only use letters, digits, '_', '.' and '-'",
                            source=str(source) if source else None)
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
        self.root = Path(root).resolve() if root else (self.source.parent if self.source else Path.cwd())
        self.defaults = {**TASK_DEFAULTS, **options}
        self.tasks: dict[str, Task] = {}

    # -- building -----------------------------------------------------------------

    def notebook(self, path: str | Path, *, name: str | None = None,
                 upstream: Iterable[Task | str] = (), parameters: dict | None = None,
                 **options: Any) -> Task:
        """Add a notebook task; ``path`` is relative to the pipeline's folder (the current
        folder for a pipeline built in Python). Returns the task, usable in ``upstream``."""
        notebook = (self.root / Path(path)).resolve()
        name = notebook.stem if name is None else name
        problem = check_task_name(name, f"task {name!r}")
        if problem:
            raise SpecError(problem, source=self._where())
        if name in self.tasks:
            raise SpecError(f"duplicate task name {name!r} (task names default to the notebook's "
                            "file stem; pass name= to tell them apart)", source=self._where())
        unknown = set(options) - set(TASK_DEFAULTS)
        if unknown:
            raise SpecError(f"task {name!r}: unknown option(s) {', '.join(sorted(unknown))}",
                            source=self._where())
        converted, problems = normalize_options(options, f"task {name!r}")
        if problems:
            raise SpecError(problems, source=self._where())
        settings = {**self.defaults, **converted}
        if settings["cwd"] is not None:
            settings["cwd"] = (self.root / Path(settings["cwd"])).resolve()
        settings["secrets"] = tuple(dict.fromkeys(self.secrets + tuple(settings["secrets"])))
        ups = tuple(u.name if isinstance(u, Task) else str(u) for u in upstream)
        task = Task(name=name, notebook=notebook, upstream=ups, parameters=dict(parameters or {}),
                    **settings)
        self.tasks[name] = task
        return task

    def add_upstream(self, name: str, extra: Iterable[str]) -> None:
        """Add edges (from a notebook's own ``upstream = [...]`` declaration)."""
        task = self.tasks[name]
        merged = tuple(dict.fromkeys(task.upstream + tuple(extra)))
        self.tasks[name] = replace(task, upstream=merged)

    def _where(self) -> str | None:
        return str(self.source) if self.source else None

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Pipeline":
        from .spec import load_yaml
        return load_yaml(path)

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        """A pipeline from a YAML file."""
        from .spec import load
        return load(path)

    # -- running ----------------------------------------------------------------------

    def validate(self, params: dict | None = None) -> None:
        """Raise ``ValidationError`` listing every problem; run nothing."""
        from .validate import validate
        validate(self, params or {})

    def run(self, **options: Any) -> "Run":
        """Validate, run to the end and return the finished ``Run``; Ctrl-C cancels cleanly.

        Options: ``params``, ``max_parallel``, ``fail_fast``, ``logical_date``, ``home``
        (the store folder), ``incremental``, ``force`` (task names), ``listeners``.
        """
        return self.start(**options).wait()

    def start(self, *, params: dict | None = None, **options: Any):
        """Validate and start a run in the background; returns a ``RunHandle``."""
        from .engine import start_run
        return start_run(self, params=params or {}, **options)

    def resume(self, run_id: str, *, from_task: str | None = None, **options: Any) -> "Run":
        """Resume an earlier run of this pipeline (see ``Run.resume``)."""
        from .engine import resume_run
        return resume_run(run_id, pipeline=self, from_task=from_task, **options).wait()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, tasks={list(self.tasks)})"
