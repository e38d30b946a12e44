"""The Python API: start and resume runs, and the public ``Pipeline``, ``Run`` and ``Store``.

The core defines what a pipeline and a run are; the verbs that load, check and run them
need the layers above the core, so the public classes live here, as the core's classes plus
those verbs. ``nborch.Pipeline``, ``nborch.Run`` and ``nborch.Store`` are these.
"""

from __future__ import annotations

import secrets as _random
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core import model
from ..core import run as records
from ..core.dag import downstream_closure
from ..core.errors import NborchError, SpecError
from ..core.states import SUCCESSFUL, State
from ..core.triggers import Trigger, trigger_of
from ..execution import outputs
from ..execution.executors import check_target, get_executor
from ..spec import loader
from ..spec.validate import PreparedRun, prepare
from ..store import store as stores
from .engine import Engine, RunHandle


class Run(records.Run):
    __doc__ = records.Run.__doc__

    def resume(self, *, from_task: str | None = None, **options: Any) -> records.Run:
        """Run again the tasks that did not succeed (with ``from_task``: that task and all
        downstream of it too), as a new attempt of this run; blocks and returns the Run."""
        return resume_run(self.run_id, pipeline=self.pipeline_obj, from_task=from_task,
                          home=self.home, **options).wait()


class Store(stores.Store):
    __doc__ = stores.Store.__doc__
    run_type = Run  # runs read back can be resumed


class Pipeline(model.Pipeline):
    __doc__ = model.Pipeline.__doc__

    @classmethod
    def from_yaml(cls, path: str | Path, *, allow_large_grid: bool = False) -> Pipeline:
        return cls._public(loader.load_yaml(path, allow_large_grid=allow_large_grid))

    @classmethod
    def load(cls, path: str | Path, *, allow_large_grid: bool = False) -> Pipeline:
        """A pipeline from a YAML file, a Ploomber file or a folder of notebooks."""
        return cls._public(loader.load(path, allow_large_grid=allow_large_grid))

    @classmethod
    def _public(cls, pipeline: model.Pipeline) -> Pipeline:
        """The loaders build the core's Pipeline; give it this class's verbs."""
        public = cls.__new__(cls)
        public.__dict__.update(vars(pipeline))
        return public

    def validate(self, params: dict | None = None, *, home: str | Path | None = None) -> None:
        """Raise ``ValidationError`` listing every problem; run nothing. Pools are checked
        against the store in ``home`` (default ``$NBORCH_HOME``)."""
        check(self, params or {}, pools=Store(home, readonly=True).known_pools(self))

    def run(self, **options: Any) -> records.Run:
        """Validate, run to the end and return the finished ``Run``; Ctrl-C cancels cleanly.

        Options: ``params``, ``max_parallel``, ``fail_fast``, ``logical_date``, ``home``
        (the store folder), ``incremental``, ``force`` (task names), ``listeners``.
        """
        return self.start(**options).wait()

    def start(self, *, params: dict | None = None, **options: Any) -> RunHandle:
        """Validate and start a run in the background; returns a ``RunHandle``."""
        return start_run(self, params=params or {}, **options)

    def resume(self, run_id: str, *, from_task: str | None = None,
               **options: Any) -> records.Run:
        """Resume an earlier run of this pipeline (see ``Run.resume``)."""
        return resume_run(run_id, pipeline=self, from_task=from_task, **options).wait()


def check(pipeline: model.Pipeline, params: dict,
          pools: Collection[str] | None = None) -> PreparedRun:
    """What a run of ``pipeline`` would check before it starts, its executor included
    (``pools``: the pools set in the run store, when the caller read them)."""
    run_executor(pipeline)
    return prepare(pipeline, params, pools=pools)


def run_executor(pipeline: model.Pipeline, executor: Any = None) -> Any:
    """Where a run of ``pipeline`` goes: ``executor`` (the command line's, the caller's),
    else the pipeline's own ``executor:``, else local (None). A name that no executor
    answers to is a ``SpecError``, before anything starts or connects."""
    if executor is None and pipeline.executor is not None:
        try:
            check_target(pipeline.executor)
        except SpecError as exc:
            raise SpecError(f"pipeline: {exc}", source=pipeline._where()) from None
        return pipeline.executor
    if isinstance(executor, str):
        check_target(executor)
    return executor


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{_random.token_hex(3)}"


def parse_logical_date(value: Any) -> datetime:
    if value is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise SpecError(f"bad logical date {value!r}; use an ISO date such as 2026-01-31 or "
                        "2026-01-31T06:00:00+01:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _check_options(max_parallel: Any, pipeline: model.Pipeline, force: Iterable[str]) -> None:
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise SpecError(f"max_parallel must be a whole number >= 1, not {max_parallel!r}")
    unknown = [f for f in force if f not in pipeline.tasks and f not in pipeline.grids]
    if unknown:
        raise SpecError(f"--force names unknown task(s) {', '.join(map(repr, unknown))} "
                        f"(tasks: {pipeline.listing()})")


def start_run(pipeline: model.Pipeline, *, params: dict, max_parallel: int | None = None,
              fail_fast: bool = False, logical_date: Any = None, home: str | Path | None = None,
              listeners: Sequence = (), executor: Any = None, incremental: bool = False,
              force: Iterable[str] = (), output_dir: str | Path | None = None,
              run_timeout: Any = None, trigger: Trigger | str = Trigger.MANUAL) -> RunHandle:
    """Validate completely, then start the run in a background thread. Executed notebooks go
    under ``output_dir`` (a folder or an fsspec URL) when given, else in the store.
    ``run_timeout`` (a duration) replaces the pipeline's own. ``trigger`` is recorded as how
    the run started (``Trigger``: the scheduler, backfill and ``after:`` say theirs)."""
    try:
        trigger = trigger_of(trigger)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    force = tuple(force)
    timeout = pipeline.run_timeout if run_timeout is None else \
        model.read_run_timeout(run_timeout, None)
    executor = run_executor(pipeline, executor)
    _check_options(max_parallel, pipeline, force)
    if output_dir is not None:
        outputs.check(str(output_dir))
    store = Store(home)
    prepared = prepare(pipeline, params, run_id=new_run_id(),
                       logical_date=parse_logical_date(logical_date),
                       pools=store.known_pools(pipeline))
    store.check_writable()  # before any kernel starts: nothing runs unrecorded
    store.mark_crashed()  # a writer records the runs whose process died (reads only show it)
    runner = get_executor(executor)
    engine = Engine(prepared, store, runner, max_parallel,
                    fail_fast, incremental,
                    pipeline.expand(force), output_dir=output_dir, run_timeout=timeout,
                    trigger=trigger)
    return engine.start(listeners)


def resume_run(run_id: str, *, pipeline: model.Pipeline | None = None,
               from_task: str | None = None, max_parallel: int | None = None,
               fail_fast: bool = False, home: str | Path | None = None,
               listeners: Sequence = (), executor: Any = None) -> RunHandle:
    """Run again the tasks of ``run_id`` that did not succeed (and, with ``from_task``, that
    task and everything downstream of it), keeping the rest, as the same run; its record's
    ``trigger`` becomes ``resume``."""
    store = Store(home)
    store.check_writable()
    store.mark_crashed()
    previous = store.get_run(run_id)
    if previous.status == State.RUNNING:
        raise NborchError(f"run {run_id} is still running; cancel it or wait for it to end")
    if pipeline is None:
        if not previous.source:
            raise NborchError(f"run {run_id} was started from Python or a notebook, not from a "
                              "pipeline file; resume it with Pipeline.resume(run_id)")
        pipeline = loader.load(previous.source, allow_large_grid=True)  # its grids ran once
    if set(pipeline.tasks) != set(previous.tasks):
        raise SpecError(f"the pipeline's tasks changed since run {run_id} "
                        f"(then: {', '.join(previous.tasks)}; now: {', '.join(pipeline.tasks)}); "
                        "start a new run instead")
    rerun = {n for n, t in previous.tasks.items() if t.status not in SUCCESSFUL}
    if from_task is not None:
        if from_task not in pipeline.tasks and from_task not in pipeline.grids:
            raise SpecError(f"--from names unknown task {from_task!r} "
                            f"(tasks: {pipeline.listing()})")
        upstream = {n: t.upstream for n, t in pipeline.tasks.items()}
        rerun |= downstream_closure(upstream, pipeline.expand([from_task]))
    _check_options(max_parallel, pipeline, ())
    executor = run_executor(pipeline, executor)
    if not rerun:
        raise NborchError(f"run {run_id} has nothing to resume: every task succeeded "
                          "(use --from TASK to run a task again)")
    prepared = prepare(pipeline, {k: v for k, v in previous.params.items()
                                  if k in pipeline.parameters},
                       run_id=run_id, logical_date=parse_logical_date(previous.logical_date),
                       pools=store.known_pools(pipeline))
    runner = get_executor(executor)
    engine = Engine(prepared, store, runner, max_parallel,
                    fail_fast, previous=previous, rerun=rerun, output_dir=previous.output_dir,
                    run_timeout=pipeline.run_timeout, trigger=Trigger.RESUME)
    return engine.start(listeners)
