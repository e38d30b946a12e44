"""Drives one run: the planner decides, the executor runs attempts, events tell everyone.

The engine thread is the only place that changes task states; attempt threads report back
through a queue. Listeners (store, CLI, widget, Run object) see every change as an event.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets as _random
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .attempt import AttemptJob, AttemptResult
from .errors import SpecError
from .events import (CANCELLED, RUNNING, RETRYING, EventBus, RunEnded, RunStarted,
                     TaskStateChanged)
from .executors import get_executor
from .model import Pipeline
from .planner import Planner, Transition
from .run import Run
from .store import Store, utcnow
from .validate import PreparedRun, prepare

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


def start_run(pipeline: Pipeline, *, params: dict, max_parallel: int | None = None,
              fail_fast: bool = False, logical_date: Any = None, home: str | Path | None = None,
              listeners: Sequence = (), executor: Any = None) -> "RunHandle":
    """Validate completely, then start the run in a background thread."""
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise SpecError(f"max_parallel must be a whole number >= 1, not {max_parallel!r}")
    run_id = new_run_id()
    prepared = prepare(pipeline, params, run_id=run_id,
                       logical_date=parse_logical_date(logical_date))
    engine = Engine(prepared, Store(home), get_executor(executor),
                    max_parallel or os.cpu_count() or 1, fail_fast)
    for listener in listeners:
        engine.bus.subscribe(listener)
    return engine.start()


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
                 fail_fast: bool = False):
        self.prepared = prepared
        self.store = store
        self.executor = executor
        self.max_parallel = max_parallel
        self.planner = Planner({n: p.task for n, p in prepared.tasks.items()}, fail_fast)
        self.bus = EventBus()
        self.run_dir = store.run_dir(prepared.run_id).resolve()
        self.finished = threading.Event()
        self._inbox: queue.Queue = queue.Queue()
        self._running: dict[str, Any] = {}  # task -> attempt handle (has .cancel())
        self._cancel_requested = False
        started = RunStarted(
            run_id=prepared.run_id, pipeline=prepared.pipeline.name, started_at=utcnow(),
            logical_date=prepared.logical_date.isoformat(), params=prepared.params,
            tasks={n: {"upstream": list(p.task.upstream), "notebook": str(p.task.notebook)}
                   for n, p in prepared.tasks.items()},
            source=str(prepared.pipeline.source) if prepared.pipeline.source else None,
            pid=os.getpid(), host=socket.gethostname())
        self._started_event = started
        self.run = Run.from_start(started)
        self.bus.subscribe(store)
        self.bus.subscribe(self.run.apply)

    # -- public -----------------------------------------------------------------------

    def start(self) -> RunHandle:
        self.run_dir.mkdir(parents=True, exist_ok=True)
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
            self.finished.set()

    def _loop(self) -> str:
        last_beat = time.monotonic()
        while True:
            now = time.monotonic()
            self._apply(self.planner.advance(now))
            if not self._cancel_requested:
                for name in self.planner.queued():
                    if len(self._running) >= self.max_parallel:
                        break
                    self._launch(name)
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

    def _apply(self, moves: list[Transition], **details: Any) -> None:
        for move in moves:
            self.bus.emit(TaskStateChanged(self.run.run_id, move.task, move.state, move.attempt,
                                           utcnow(), reason=move.reason, **details))

    def _launch(self, name: str) -> None:
        move = self.planner.start(name)
        job = self._job(name, move.attempt)
        self._apply([move])
        self._running[name] = self.executor.submit(
            job, self.bus.emit, lambda result: self._inbox.put(("done", name, result)))

    def _finish(self, name: str, result: AttemptResult) -> None:
        self._running.pop(name, None)
        if result.status == "cancelled" or (self._cancel_requested and result.status != "success"):
            moves = [self.planner.cancelled(name)]
        else:
            moves = self.planner.finish(name, result.status == "success", time.monotonic())
            if self.planner.fail_fast and any(m.state == CANCELLED for m in moves):
                for handle in list(self._running.values()):
                    handle.cancel()
        attempt_status = "cancelled" if moves[0].state == CANCELLED else result.status
        output = result.output_path
        if moves[0].state == RETRYING and output:
            kept = Path(output).with_name(f"{name}.attempt-{moves[0].attempt}.ipynb")
            os.replace(output, kept)
            output = str(kept)
        first, rest = moves[0], moves[1:]
        self.bus.emit(TaskStateChanged(
            self.run.run_id, name, first.state, first.attempt, result.ended_at, error=result.error,
            values=result.values, output_path=output, reason=first.reason,
            attempt_status=attempt_status))
        self._apply(rest)

    def _job(self, name: str, attempt: int) -> AttemptJob:
        p = self.prepared.tasks[name]
        upstream = {}
        for up in p.task.upstream:
            t = self.run.tasks[up]
            upstream[up] = {"notebook": t.output_path, "values": t.values}
        parameters = dict(p.parameters)
        if p.inject_upstream:
            parameters["upstream"] = upstream
        artifacts = self.run_dir / "artifacts" / name
        env = {
            **p.task.env,
            "NBORCH_RUN_ID": self.run.run_id,
            "NBORCH_TASK": name,
            "NBORCH_ATTEMPT": str(attempt),
            "NBORCH_LOGICAL_DATE": self.prepared.logical_date.isoformat(),
            "NBORCH_ARTIFACT_DIR": str(artifacts),
            "NBORCH_HOME": str(self.store.home.resolve()),
            **p.secrets,
        }
        return AttemptJob(
            run_id=self.run.run_id, task=name, attempt=attempt, notebook=str(p.task.notebook),
            parameters=parameters, kernel=p.kernel, cwd=str(p.task.workdir),
            output_path=str(self.run_dir / f"{name}.ipynb"), log_path=str(self.run_dir / f"{name}.log"),
            env=env, timeout=p.task.timeout, secret_values=self.prepared.secret_values)
