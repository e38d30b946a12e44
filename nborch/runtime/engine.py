"""Drives one run: the planner decides, the executor runs attempts, events tell everyone.

The engine thread is the only place that changes task states; attempt threads report back
through a queue. Listeners (store, CLI, widget, Run object) see every change as an event.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import secrets as _random
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..core import private
from ..core.clock import utcnow
from ..core.dag import downstream_map
from ..core.errors import NborchError, SpecError
from ..core.events import (CANCELLED, KEPT_ON_RESUME, RETRYING, SKIPPED, SUCCESS, UPSTREAM_FAILED,
                           EventBus, RunEnded, RunStarted, TaskStateChanged)
from ..core.model import Pipeline
from ..core.planner import Planner, Transition
from ..core.run import Run
from ..execution import outputs
from ..execution.attempt import AttemptJob, AttemptResult
from ..execution.executors import get_executor
from ..execution.kernels import KernelRequest
from ..spec.ploomber import injected_upstream, ploomber_job
from ..spec.validate import PreparedRun, prepare, stable_hash
from ..store.store import Store
from . import lineage
from .hooks import HookRunner

log = logging.getLogger("nborch")
HEARTBEAT_SECONDS = 5.0

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

def _check_options(max_parallel: Any, pipeline: Pipeline, force: Iterable[str]) -> None:
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise SpecError(f"max_parallel must be a whole number >= 1, not {max_parallel!r}")
    unknown = [f for f in force if f not in pipeline.tasks and f not in pipeline.grids]
    if unknown:
        raise SpecError(f"--force names unknown task(s) {', '.join(map(repr, unknown))} "
                        f"(tasks: {pipeline.listing()})")

def start_run(pipeline: Pipeline, *, params: dict, max_parallel: int | None = None,
              fail_fast: bool = False, logical_date: Any = None, home: str | Path | None = None,
              listeners: Sequence = (), executor: Any = None, incremental: bool = False,
              force: Iterable[str] = (), output_dir: str | Path | None = None) -> "RunHandle":
    """Validate completely, then start the run in a background thread. Executed notebooks go
    under ``output_dir`` (a folder or an fsspec URL) when given, else in the store."""
    force = tuple(force)
    _check_options(max_parallel, pipeline, force)
    if output_dir is not None:
        outputs.check(str(output_dir))
    prepared = prepare(pipeline, params, run_id=new_run_id(),
                       logical_date=parse_logical_date(logical_date))
    store = Store(home)
    store.check_writable()  # before any kernel starts: nothing runs unrecorded
    engine = Engine(prepared, store, get_executor(executor),
                    max_parallel or os.cpu_count() or 1, fail_fast, incremental,
                    pipeline.expand(force), output_dir=output_dir)
    return engine.start(listeners)

def resume_run(run_id: str, *, pipeline: Pipeline | None = None, from_task: str | None = None,
               max_parallel: int | None = None, fail_fast: bool = False,
               home: str | Path | None = None, listeners: Sequence = (),
               executor: Any = None) -> "RunHandle":
    """Run again the tasks of ``run_id`` that did not succeed (and, with ``from_task``, that
    task and everything downstream of it), keeping the rest, as the same run."""
    store = Store(home)
    store.check_writable()
    previous = store.get_run(run_id)  # also marks it crashed if its process died
    if previous.status == "running":
        raise NborchError(f"run {run_id} is still running; cancel it or wait for it to end")
    if pipeline is None:
        if not previous.source:
            raise NborchError(f"run {run_id} was started from Python or a notebook, not from a "
                              "pipeline file; resume it with Pipeline.resume(run_id)")
        from ..spec.loader import load
        pipeline = load(previous.source, allow_large_grid=True)  # its grids ran once already
    if set(pipeline.tasks) != set(previous.tasks):
        raise SpecError(f"the pipeline's tasks changed since run {run_id} "
                        f"(then: {', '.join(previous.tasks)}; now: {', '.join(pipeline.tasks)}); "
                        "start a new run instead")
    rerun = {n for n, t in previous.tasks.items() if t.status not in KEPT_ON_RESUME}
    if from_task is not None:
        if from_task not in pipeline.tasks and from_task not in pipeline.grids:
            raise SpecError(f"--from names unknown task {from_task!r} "
                            f"(tasks: {pipeline.listing()})")
        for name in pipeline.expand([from_task]):
            rerun |= _downstream_closure(pipeline, name)
    _check_options(max_parallel, pipeline, ())
    if not rerun:
        raise NborchError(f"run {run_id} has nothing to resume: every task succeeded "
                          "(use --from TASK to run a task again)")
    prepared = prepare(pipeline, {k: v for k, v in previous.params.items()
                                  if k in pipeline.parameters},
                       run_id=run_id, logical_date=parse_logical_date(previous.logical_date))
    engine = Engine(prepared, store, get_executor(executor), max_parallel or os.cpu_count() or 1,
                    fail_fast, previous=previous, rerun=rerun, output_dir=previous.output_dir)
    return engine.start(listeners)

def _downstream_closure(pipeline: Pipeline, name: str) -> set[str]:
    down = downstream_map({n: t.upstream for n, t in pipeline.tasks.items()})
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += down[current]
    return seen

class RunHandle:
    """A run in progress. ``wait()`` returns the finished Run; ``cancel()`` stops it."""

    def __init__(self, engine: "Engine"):
        self._engine = engine
        self.run: Run = engine.run
        self.run_id = engine.run.run_id

    @property
    def done(self) -> bool:
        return self._engine.finished.is_set()

    def cancel(self) -> None:
        self._engine.cancel()

    def subscribe(self, listener) -> None:
        """Listen to the run's events from now on."""
        self._engine.bus.subscribe(listener)

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends; Ctrl-C cancels it, waits for the kernels to stop, re-raises."""
        try:
            if not self._engine.finished.wait(timeout):
                raise TimeoutError(f"run {self.run_id} still running after {timeout}s")
        except KeyboardInterrupt:
            self.cancel()
            self._engine.finished.wait()
            raise
        return self.run

    def __repr__(self) -> str:
        return f"<RunHandle {self.run!r}>"

class Engine:
    def __init__(self, prepared: PreparedRun, store: Store, executor, max_parallel: int,
                 fail_fast: bool = False, incremental: bool = False, force: Iterable[str] = (),
                 previous: Run | None = None, rerun: set[str] | None = None,
                 output_dir: str | Path | None = None):
        self.prepared = prepared
        self.store = store
        self.executor = executor
        self.max_parallel = max_parallel
        self.incremental = incremental
        self.force = set(force)
        self.bus = EventBus()
        self.run_dir = store.run_dir(prepared.run_id).resolve()
        self.output_dir = str(output_dir) if output_dir is not None else None
        self.notebooks = (outputs.join(self.output_dir, prepared.run_id) if self.output_dir
                          else str(self.run_dir))  # where executed notebooks go
        self.finished = threading.Event()
        self._inbox: queue.Queue = queue.Queue()
        self._running: dict[str, Any] = {}  # task -> attempt handle (has .cancel())
        self._cancel_requested = False
        self._stale: set[str] = set()  # tasks found not up to date (incremental)
        self._warming: set[str] = set()  # tasks whose kernel was started ahead of need
        executor.on_kernel_ready = lambda: self._inbox.put(("kernel_ready", None, None))
        started = RunStarted(
            run_id=prepared.run_id, pipeline=prepared.pipeline.name, started_at=utcnow(),
            logical_date=prepared.logical_date.isoformat(), params=prepared.params,
            tasks={n: _task_record(p) for n, p in prepared.tasks.items()},
            source=str(prepared.pipeline.source) if prepared.pipeline.source else None,
            pid=os.getpid(), host=socket.gethostname(),
            resumes=previous.resumes + 1 if previous else 0, rerun=tuple(sorted(rerun or ())),
            output_dir=self.output_dir)
        self._started_event = started
        tasks = {n: p.task for n, p in prepared.tasks.items()}
        if previous is None:
            self.run = Run.from_start(started)
            self.planner = Planner(tasks, fail_fast)
        else:
            self.run = _resumed(previous, started)
            kept = {n: t.status for n, t in previous.tasks.items() if n not in started.rerun}
            self.planner = Planner(tasks, fail_fast, done=kept,
                                   attempts={n: t.attempts for n, t in previous.tasks.items()})
        self.run.home, self.run.pipeline_obj = store.home, prepared.pipeline
        self.bus.subscribe(store)
        self.bus.subscribe(self.run.apply)
        pipeline = prepared.pipeline
        task_hooks = {n: p.task.hooks for n, p in prepared.tasks.items() if p.task.hooks}
        if pipeline.hooks or task_hooks:  # after run.apply: hooks read the updated Run
            self.bus.subscribe(HookRunner(self.run, pipeline.hooks, task_hooks,
                                          self.run_dir / "hooks.log", prepared.env,
                                          prepared.secret_values))
        if (lineage_emitter := lineage.emitter(prepared.secret_values)) is not None:
            self.bus.subscribe(lineage_emitter)  # OpenLineage events, when configured

    # -- public -----------------------------------------------------------------------

    def start(self, listeners: Sequence = ()) -> RunHandle:
        for listener in listeners:
            self.bus.subscribe(listener)
        private.makedirs(self.run_dir)
        self.bus.emit(self._started_event)
        threading.Thread(target=self._main, name=f"nborch-run-{self.run.run_id}",
                         daemon=True).start()
        return RunHandle(self)

    def cancel(self) -> None:
        self._inbox.put(("cancel", None, None))

    # -- the loop -----------------------------------------------------------------------

    def _main(self) -> None:
        status = "failed"
        try:
            status = self._loop()
        except Exception:
            log.exception("run %s: the engine failed", self.run.run_id)
            for handle in list(self._running.values()):
                handle.cancel()
        finally:
            self.bus.emit(RunEnded(self.run.run_id, status, utcnow()))
            self.executor.shutdown()
            self.store.close()  # a process that starts runs for months holds no file per run
            self.finished.set()

    def _loop(self) -> str:
        last_beat = time.monotonic()
        while True:
            now = time.monotonic()
            self._apply(self.planner.advance(now))
            if not self._cancel_requested and self._dispatch():
                continue  # tasks were skipped as up to date: their downstream may be ready
            if self.planner.done and not self._running:
                break
            wake = self.planner.next_wakeup()
            wait = HEARTBEAT_SECONDS if wake is None else max(0.0, min(wake - now, HEARTBEAT_SECONDS))
            try:
                kind, name, result = self._inbox.get(timeout=wait)
            except queue.Empty:
                kind = None
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                self.store.heartbeat(self.run.run_id)
                last_beat = time.monotonic()
            if kind == "done":
                self._finish(name, result)
            elif kind == "cancel" and not self._cancel_requested:
                self._cancel_requested = True
                self._apply(self.planner.cancel_pending("the run was cancelled"))
                for handle in list(self._running.values()):
                    handle.cancel()
        return "cancelled" if self._cancel_requested else self.planner.run_status()

    def _dispatch(self) -> bool:
        """Start queued tasks while slots are free; True when some were skipped instead."""
        skipped = False
        for name in self.planner.queued():
            if self._up_to_date(name):
                skipped = True
            elif len(self._running) < self.max_parallel:
                self._warming.discard(name)
                self._launch(name)
            elif not self.incremental:
                break  # no free slot; with --incremental each is first checked once
        self._prewarm()
        return skipped

    def _apply(self, moves: list[Transition], **details: Any) -> None:
        for move in moves:
            if move.state in (CANCELLED, SKIPPED, UPSTREAM_FAILED) and move.task in self._warming:
                self._warming.discard(move.task)
                self.executor.discard(move.task)
            self.bus.emit(TaskStateChanged(self.run.run_id, move.task, move.state, move.attempt,
                                           utcnow(), reason=move.reason, **details))

    def _fingerprint(self, name: str) -> str:
        """What a task's result depends on: its notebook's cells, resolved parameters, kernel,
        and which execution produced each upstream result."""
        p = self.prepared.tasks[name]
        ups = {u: [self.run.tasks[u].fingerprint, self.run.tasks[u].result_of]
               for u in p.task.upstream}
        doc = {"source": p.source_hash, "parameters": p.parameters, "kernel": p.kernel,
               "upstream": ups}
        if p.products:  # only when declared, so older fingerprints stay valid
            doc["products"] = p.products
        return stable_hash(doc)

    def _up_to_date(self, name: str) -> bool:
        """With --incremental, skip a task identical to its last successful run."""
        if not self.incremental or name in self.force or name in self._stale:
            return False
        self._stale.add(name)  # checked once: its upstream cannot change while it waits
        fingerprint = self._fingerprint(name)
        last = self.store.last_success(self.prepared.pipeline.name, name)
        p = self.prepared.tasks[name]
        kept = list(p.products.values())  # what the earlier run left that this one would reuse
        if p.command is None:
            kept.append(last and last["output_path"])
        if not last or last["fingerprint"] != fingerprint or \
                not all(path and outputs.exists(path) for path in kept):
            return False
        move = self.planner.skip(name, f"up to date with run {last['result_of']}")
        if name in self._warming:
            self._warming.discard(name)
            self.executor.discard(name)
        self.bus.emit(TaskStateChanged(
            self.run.run_id, name, move.state, move.attempt, utcnow(), reason=move.reason,
            values=last["values"], output_path=last["output_path"], fingerprint=fingerprint,
            result_of=last["result_of"]))
        return True

    def _launch(self, name: str) -> None:
        move = self.planner.start(name)
        job = self._job(name, move.attempt)
        self._apply([move])
        self._running[name] = self.executor.submit(
            job, self._kernel_request(name, move.attempt), self.bus.emit,
            lambda result: self._inbox.put(("done", name, result)))

    def _prewarm(self) -> None:
        """Start kernels for tasks that will be ready when running tasks finish: no more
        kernels starting at once than CPUs, and no more spares than ``max_parallel``.

        A spare started beside a kernel that a ready task waits for slows that one down on
        few cores (cocalc#7139) when a start costs half a CPU-second; then no spare starts
        until it is ready. Forked kernels cost a quarter of that, and starting the next
        ones early pays (chain10: 2.05 s instead of 2.27 s, fan16 and dag50 unchanged).
        """
        prewarm = getattr(self.executor, "prewarm", None)
        if prewarm is None or self._cancel_requested:
            return
        waited_for, spares_starting = self.executor.starting()
        if waited_for and not getattr(self.executor, "forks_kernels", False):
            return
        warm = self.executor.warm()
        budget = min(self.max_parallel - len(warm),
                     (os.cpu_count() or 1) - spares_starting - waited_for)
        if budget <= 0 or not _memory_to_spare():
            return
        for name in self.planner.soon_ready():
            if budget <= 0:
                break
            if name in warm or name in self._running or self.prepared.tasks[name].command:
                continue
            attempt = self.planner.attempt[name] + 1
            prewarm(name, attempt, self._kernel_request(name, attempt))
            self._warming.add(name)
            budget -= 1

    def _finish(self, name: str, result: AttemptResult) -> None:
        self._running.pop(name, None)
        release = getattr(self.executor, "release", None)
        if release is not None:
            release(name, self.planner.attempt[name])
        if result.status == "cancelled" or (self._cancel_requested and result.status != "success"):
            moves = [self.planner.cancelled(name)]
        else:
            moves = self.planner.finish(name, result.status == "success", time.monotonic())
            if self.planner.fail_fast and any(m.state == CANCELLED for m in moves):
                for handle in list(self._running.values()):
                    handle.cancel()
        first, rest = moves[0], moves[1:]
        output = result.output_path
        if first.state == RETRYING and output:
            kept = outputs.sibling(output, f"{name}.attempt-{first.attempt}.ipynb")
            outputs.move(output, kept)
            output = kept
        done = first.state == SUCCESS
        self.bus.emit(TaskStateChanged(
            self.run.run_id, name, first.state, first.attempt, result.ended_at, error=result.error,
            values=result.values, output_path=output, reason=first.reason,
            attempt_status="cancelled" if first.state == CANCELLED else result.status,
            fingerprint=self._fingerprint(name) if done else None,
            result_of=self.run.run_id if done else None))
        self._apply(rest)

    def _env(self, name: str, attempt: int) -> dict:
        """What a task's kernel or command gets on top of nborch's environment (less
        ``withheld_env``): its ``env``, run details, its own secrets."""
        p = self.prepared.tasks[name]
        return {
            **p.task.env,
            "NBORCH_RUN_ID": self.run.run_id,
            "NBORCH_TASK": name,
            "NBORCH_ATTEMPT": str(attempt),
            "NBORCH_LOGICAL_DATE": self.prepared.logical_date.isoformat(),
            "NBORCH_ARTIFACT_DIR": str(self.run_dir / "artifacts" / name),
            "NBORCH_HOME": str(self.store.home.resolve()),
            **p.secrets,
        }

    def _kernel_request(self, name: str, attempt: int) -> KernelRequest | None:
        """The kernel an attempt needs (None for a command): known before its upstream
        tasks finish."""
        p = self.prepared.tasks[name]
        if p.command is not None:
            return None
        return KernelRequest(p.kernel, str(p.task.workdir), self._env(name, attempt),
                             self.prepared.withheld_env)

    def _job(self, name: str, attempt: int) -> AttemptJob:
        p = self.prepared.tasks[name]
        ploomber = p.task.ploomber
        if ploomber is not None:  # Ploomber's shape: each upstream task's product
            upstream = injected_upstream(p.task, lambda up: self.prepared.tasks[up].product)
        else:
            upstream = {up: {"notebook": self.run.tasks[up].output_path,
                             "values": self.run.tasks[up].values,
                             **self.prepared.tasks[up].products} for up in p.task.upstream}
        env = self._env(name, attempt)
        parameters = dict(p.parameters)
        if p.command is not None:
            env["NBORCH_UPSTREAM"] = json.dumps(upstream)
        elif p.inject_upstream:
            parameters["upstream"] = upstream
        if ploomber is not None and "product" in parameters:  # last, as Ploomber injects it
            parameters["product"] = parameters.pop("product")
        return AttemptJob(
            run_id=self.run.run_id, task=name, attempt=attempt,
            notebook=str(p.task.notebook or ""), parameters=parameters, kernel=p.kernel or "",
            cwd=str(p.task.workdir), output_path=outputs.join(self.notebooks, f"{name}.ipynb"),
            log_path=str(self.store.log_path(self.run.run_id, name).resolve()),  # workers elsewhere
            env=env, withheld_env=tuple(sorted(self.prepared.withheld_env)),
            timeout=p.task.timeout, secret_values=self.prepared.secret_values,
            resources=p.task.resources, command=p.command, products=p.products,
            **(ploomber_job(ploomber, p.products) if ploomber is not None else {}))


def _task_record(p) -> dict:
    """A task as ``RunStarted`` announces it (and the store records it)."""
    record = {"upstream": list(p.task.upstream), "grid": p.task.grid, "products": p.products,
              "notebook": str(p.task.notebook) if p.task.notebook else None}
    if p.command is not None:
        record["command"] = list(p.command)
    return record


def _memory_to_spare(minimum: int = 1 << 30) -> bool:
    import psutil
    return psutil.virtual_memory().available > minimum


def _resumed(previous: Run, started: RunStarted) -> Run:
    """The live Run of a resume: kept tasks as they were, the others back to pending."""
    run = copy.deepcopy(previous)
    run.status, run.ended_at, run.resumes = "running", None, started.resumes
    for name, t in run.tasks.items():
        record = started.tasks[name]
        t.grid, t.command, t.products = record["grid"], record.get("command"), record["products"]
    for name in started.rerun:
        t = run.tasks[name]
        t.status, t.started_at, t.ended_at, t.error, t.reason, t.progress = (
            "pending", None, None, None, None, None)
        t.fingerprint = t.result_of = None
    return run
