"""Drives one run: the planner decides, the executor runs attempts, events tell everyone.

The engine thread is the only place that changes task states; attempt threads report back
through a queue. Listeners (store, CLI, widget, Run object) see every change as an event.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..core import private
from ..core.clock import format_duration, utcnow
from ..core.errors import StoreError, error_dict
from ..core.events import EventBus, RunEnded, RunStarted, TaskStateChanged
from ..core.planner import Planner, Transition
from ..core.run import Run, resumed_run
from ..core.states import FINAL, NOT_RUN, State
from ..core.triggers import Trigger
from ..execution import outputs
from ..execution.attempt import AttemptResult
from ..execution.executors import Executor
from ..spec.validate import PreparedRun
from ..store.store import Store
from . import lineage
from .hooks import HookRunner
from .incremental import Incremental
from .jobs import Jobs, task_records
from .pooling import PoolSlots
from .recording import Recorder, store_wait
from .slots import AttemptSlots

log = logging.getLogger("nborch")
HEARTBEAT_SECONDS = 5.0


class RunHandle:
    """A run in progress. ``wait()`` returns the finished Run; ``cancel()`` stops it."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.run: Run = engine.run
        self.run_id = engine.run.run_id

    @property
    def done(self) -> bool:
        return self._engine.finished.is_set()

    @property
    def unrecorded(self) -> str | None:
        """Once the run is done: what the store could not record, in a sentence (None when
        it holds everything)."""
        return self._engine.recorder.unrecorded()

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
    def __init__(self, prepared: PreparedRun, store: Store, executor: Executor,
                 max_parallel: int | None, fail_fast: bool = False, incremental: bool = False,
                 force: Iterable[str] = (), previous: Run | None = None,
                 rerun: set[str] | None = None, output_dir: str | Path | None = None,
                 run_timeout: float | None = None, trigger: Trigger = Trigger.MANUAL):
        self.prepared = prepared
        self.run_timeout = run_timeout  # seconds the whole run may take, if limited
        self._timed_out = False
        self.store = store
        self.executor = executor
        self.bus = EventBus()
        self.run_dir = store.run_dir(prepared.run_id).resolve()
        self.output_dir = str(output_dir) if output_dir is not None else None
        self.notebooks = (outputs.join(self.output_dir, prepared.run_id) if self.output_dir
                          else str(self.run_dir))  # where executed notebooks go
        self.finished = threading.Event()
        self._inbox: queue.Queue = queue.Queue()
        self._running: dict[str, Any] = {}  # task -> attempt handle (has .cancel())
        self._cancel_requested = False
        self._warming: set[str] = set()  # tasks whose kernel was started ahead of need
        self._pools = PoolSlots(store, prepared.run_id)
        self._unstarted: set[str] = set()  # submitted, still in the executor's queue
        executor.on_kernel_ready = lambda: self._inbox.put(("kernel_ready", None, None))
        executor.on_attempt_started = lambda task, attempt, at: self._inbox.put(
            ("started", task, (attempt, at)))
        started = RunStarted(
            run_id=prepared.run_id, pipeline=prepared.pipeline.name, started_at=utcnow(),
            logical_date=prepared.logical_date.isoformat(), params=prepared.params,
            tasks=task_records(prepared),
            source=str(prepared.pipeline.source) if prepared.pipeline.source else None,
            pid=os.getpid(), host=socket.gethostname(),
            resumes=previous.resumes + 1 if previous else 0, rerun=tuple(sorted(rerun or ())),
            output_dir=self.output_dir, trigger=trigger)
        self._started_event = started
        tasks = {n: p.task for n, p in prepared.tasks.items()}
        if previous is None:
            self.run = store.run_type.from_start(started)
            self.planner = Planner(tasks, fail_fast)
        else:
            self.run = resumed_run(previous, started)
            kept = {n: t.status for n, t in previous.tasks.items() if n not in started.rerun}
            self.planner = Planner(tasks, fail_fast, done=kept,
                                   attempts={n: t.attempts for n, t in previous.tasks.items()})
        self.run.home, self.run.pipeline_obj = store.home, prepared.pipeline
        self._slots = AttemptSlots(executor, self.planner.resource_set, max_parallel)
        self.jobs = Jobs(prepared, self.run, store, self.run_dir, self.notebooks)
        self.incremental = Incremental(prepared, self.run, store, incremental, force)
        # The store and the live Run must follow every event; the rest is best-effort.
        self.store_wait = store_wait()
        self.recorder = Recorder(store, prepared.run_id)
        self.bus.subscribe(self.recorder, critical=True)
        self.bus.subscribe(self.run.apply, critical=True)
        self.bus.on_critical_failure = self._cannot_record
        pipeline = prepared.pipeline
        task_hooks = {n: p.task.hooks for n, p in prepared.tasks.items() if p.task.hooks}
        self.hooks = None
        if pipeline.hooks or task_hooks:  # after run.apply: hooks read the updated Run
            self.hooks = HookRunner(self.run, pipeline.hooks, task_hooks,
                                    self.run_dir / "hooks.log", prepared.env,
                                    prepared.secret_values)
            self.bus.subscribe(self.hooks)
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

    def cancel(self, reason: str = "the run was cancelled") -> None:
        self._inbox.put(("cancel", reason, None))

    def _time_out(self) -> None:
        """The run passed its ``run_timeout``: what runs is stopped, the rest not started, and
        the run fails (``on_failure`` hooks fire with the reason ``run timeout``)."""
        self._timed_out = True
        limit = format_duration(self.run_timeout)
        self.run.error = error_dict("RunTimeout", f"the run passed its run_timeout of {limit}")
        if self.hooks is not None:
            self.hooks.reason = "run timeout"
        self.cancel("run timeout")

    def _check_cancel_request(self) -> None:
        """``nborch cancel`` from another process: it asks through the store."""
        try:
            asked = not self._cancel_requested and self.store.cancel_requested(self.run.run_id)
        except StoreError:  # not readable now: the next heartbeat looks again
            return
        if asked:
            if self.hooks is not None:
                self.hooks.reason = "cancelled"  # on_failure tells who did not cancel it
            self.cancel("cancelled by `nborch cancel`")

    def _cannot_record(self, exc: Exception) -> None:
        """A critical listener failed: a run that cannot be recorded stops."""
        self.run.error = error_dict(type(exc).__name__, str(exc))
        self.cancel(f"the run was stopped: {exc}")

    # -- the loop -----------------------------------------------------------------------

    def _main(self) -> None:
        status: str = State.FAILED
        try:
            status = self._loop()
        except Exception as exc:
            log.exception("run %s: the engine failed", self.run.run_id)
            self._abandon(exc)
        finally:
            self.bus.emit(RunEnded(self.run.run_id, status, utcnow(), error=self.run.error))
            self.executor.shutdown()
            self._pools.release_all()
            self.bus.flush()  # every listener (hooks: their alerts are out) has seen the end
            self.recorder.finish(self.store_wait)
            if (unrecorded := self.recorder.unrecorded()) is not None:  # the Run says so too
                self.run.error = error_dict("StoreWriteFailed", unrecorded)
            self.store.close()  # a process that starts runs for months holds no file per run
            self.finished.set()

    def _abandon(self, exc: Exception) -> None:
        """The loop failed (a bug of ours): stop what runs and end every task, so that no
        task of the failed run is left running; the run's error says why."""
        self.run.error = error_dict("EngineError", f"the engine failed: {type(exc).__name__}: "
                                    f"{exc}; `nborch resume` runs what did not finish")
        for handle in list(self._running.values()):
            handle.cancel()
        for name, task in self.run.tasks.items():  # as recorded, whatever the planner said
            if task.status not in FINAL:
                self.bus.emit(TaskStateChanged(
                    self.run.run_id, name, State.FAILED, task.attempts, utcnow(),
                    error=self.run.error, attempt_status=State.FAILED
                    if task.status == State.RUNNING else None))

    def _loop(self) -> str:
        if any(p.task.pool for p in self.prepared.tasks.values()):
            self.store.release_slots(self.run.run_id)  # a resume's crashed attempts held some
        last_beat = time.monotonic()
        deadline = last_beat + self.run_timeout if self.run_timeout else math.inf
        while True:
            now = time.monotonic()
            self._apply(self.planner.advance(now))
            if not self._cancel_requested and self._dispatch():
                continue  # tasks were skipped as up to date: their downstream may be ready
            if self.planner.done and not self._running:
                break
            wakes = [t for t in (self.planner.next_wakeup(),
                                 self._pools.next_poll(self.planner.state)) if t is not None]
            wait = max(0.0, min([HEARTBEAT_SECONDS, *(t - now for t in wakes)]))
            timing = not (self._cancel_requested or self._timed_out)  # the run's deadline
            if timing:
                wait = max(0.0, min(wait, deadline - now))
            try:
                kind, name, result = self._inbox.get(timeout=wait)
            except queue.Empty:
                kind = None
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                try:
                    self.recorder.beat()  # also retries what the store did not take yet
                except StoreError as exc:
                    self._cannot_record(exc)
                self._check_cancel_request()
                last_beat = time.monotonic()
            if timing and time.monotonic() >= deadline:
                self._time_out()
            if kind == "done":
                self._finish(name, result)
            elif kind == "started":
                self._started(name, *result)
            elif kind == "cancel" and not self._cancel_requested:
                self._cancel_requested = True
                self._apply(self.planner.cancel_pending(name))
                for handle in list(self._running.values()):
                    handle.cancel()
        if self._timed_out:
            return State.FAILED
        return State.CANCELLED if self._cancel_requested else self.planner.run_status()

    def _dispatch(self) -> bool:
        """Start queued tasks while slots are free (the rule: ``slots``); True when some were
        skipped instead. With --incremental each queued task is first checked once."""
        skipped, every = False, self.incremental.enabled
        self._slots.refresh()
        for name in (self.planner.queued() if every
                     else self.planner.queued_where(self._slots.open)):
            if self._up_to_date(name):
                skipped = True
            elif self._slots.free(name):
                if self._slot_for(name):
                    self._warming.discard(name)
                    self._launch(name)
            elif not every and self._slots.full:
                break
        self._prewarm()
        return skipped

    def _slot_for(self, name: str) -> bool:
        """Whether ``name`` may start as far as its pool goes (a slot taken for it); if
        not, the first time, it says which pool it waits for (still ``queued``)."""
        pool = self.prepared.tasks[name].task.pool
        if pool is None or self._pools.take(pool, name):
            return True
        reason = self._pools.reason(name)
        if self.run.tasks[name].reason != reason:
            self.bus.emit(TaskStateChanged(self.run.run_id, name, State.QUEUED,
                                           self.planner.attempt[name], utcnow(), reason=reason))
        return False

    def _apply(self, moves: list[Transition], **details: Any) -> None:
        for move in moves:
            if move.state in NOT_RUN and move.task in self._warming:
                self._warming.discard(move.task)
                self.executor.discard(move.task)
            self.bus.emit(TaskStateChanged(self.run.run_id, move.task, move.state, move.attempt,
                                           utcnow(), reason=move.reason, **details))

    def _up_to_date(self, name: str) -> bool:
        """With --incremental, skip a task identical to its last successful run."""
        last = self.incremental.reusable(name)
        if last is None:
            return False
        move = self.planner.skip(name, f"up to date with run {last['result_of']}")
        if name in self._warming:
            self._warming.discard(name)
            self.executor.discard(name)
        self.bus.emit(TaskStateChanged(
            self.run.run_id, name, move.state, move.attempt, utcnow(), reason=move.reason,
            values=last["values"], output_path=last["output_path"],
            fingerprint=last["fingerprint"], result_of=last["result_of"]))
        return True

    def _launch(self, name: str) -> None:
        move = self.planner.start(name)
        self._slots.take(name)
        job = self.jobs.job(name, move.attempt, retried=self.planner.retried(name))
        if self.executor.queues:  # queued until it starts on a worker: `timeout:` too
            self._unstarted.add(name)
        else:
            self._apply([move])
        self._running[name] = self.executor.submit(
            job, self.jobs.kernel_request(name, move.attempt), self.bus.emit,
            lambda result: self._inbox.put(("done", name, result)))

    def _prewarm(self) -> None:
        """Start kernels for tasks that will be ready when running tasks finish: no more
        kernels starting at once than CPUs, and no more spares than ``max_parallel``.

        A spare started beside a kernel that a ready task waits for slows that one down on
        few cores (cocalc#7139) when a start costs half a CPU-second; then no spare starts
        until it is ready. Forked kernels cost a quarter of that, and starting the next
        ones early pays (chain10: 2.05 s instead of 2.27 s, fan16 and dag50 unchanged).
        """
        if not self.executor.prewarms or self._cancel_requested:
            return
        waited_for, spares_starting = self.executor.starting()
        if waited_for and not self.executor.forks_kernels:
            return
        warm = self.executor.warm()
        budget = min(self._slots.limit - len(warm),
                     (os.cpu_count() or 1) - spares_starting - waited_for)
        if budget <= 0 or not _memory_to_spare():
            return
        for name in self.planner.soon_ready():
            if budget <= 0:
                break
            if name in warm or name in self._running or name in self._pools.waiting:
                continue
            attempt = self.planner.attempt[name] + 1
            request = self.jobs.kernel_request(name, attempt)
            if request is None:  # a command: no kernel
                continue
            self.executor.prewarm(name, attempt, request)
            self._warming.add(name)
            budget -= 1

    def _started(self, name: str, attempt: int, at: str) -> None:
        if name in self._unstarted and attempt == self.planner.attempt[name]:
            self._unstarted.discard(name)
            self.bus.emit(TaskStateChanged(self.run.run_id, name, State.RUNNING, attempt, at))

    def _finish(self, name: str, result: AttemptResult) -> None:
        # An attempt that ended in the queue (cancelled, refused) is recorded as started then.
        self._started(name, self.planner.attempt[name], result.started_at)
        self._running.pop(name, None)
        self._slots.give_back(name)
        self._pools.release(name)
        self.executor.release(name, self.planner.attempt[name])
        if result.status == State.CANCELLED or (self._cancel_requested
                                                and result.status != State.SUCCESS):
            moves = [self.planner.cancelled(name)]
        else:
            moves = self.planner.finish(name, result.status == State.SUCCESS, time.monotonic())
            if self.planner.fail_fast and any(m.state == State.CANCELLED for m in moves):
                for handle in list(self._running.values()):
                    handle.cancel()
        first, rest = moves[0], moves[1:]
        done = first.state == State.SUCCESS
        self.bus.emit(TaskStateChanged(
            self.run.run_id, name, first.state, first.attempt, result.ended_at, error=result.error,
            values=result.values, output_path=result.output_path, reason=first.reason,
            attempt_status=State.CANCELLED if first.state == State.CANCELLED else result.status,
            fingerprint=self.incremental.fingerprint(name) if done else None,
            result_of=self.run.run_id if done else None))
        self._apply(rest)


def _memory_to_spare(minimum: int = 1 << 30) -> bool:
    import psutil
    return psutil.virtual_memory().available > minimum

