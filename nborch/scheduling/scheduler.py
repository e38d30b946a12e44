"""``nborch scheduler`` and ``nborch backfill``: start runs for the slots of schedules.

The scheduler is one long-running process per store (an exclusive lock on
``scheduler.lock`` in the store's folder, released by the OS if the process dies). Each
tick it re-reads the schedules from the store, so ``nborch schedule ...`` changes apply
without a restart, and starts a run for every due slot that ``max_active_runs`` allows,
with the slot as the run's ``logical_date``. Runs are ordinary runs of this process: the
store, ``nborch runs`` and the Jupyter views see them as they go.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import IO

from ..core.errors import NborchError, SpecError, StoreUnusable
from ..core.events import RunEnded
from ..core.states import State
from ..core.triggers import Trigger
from ..store.store import Store
from . import after, lock, sla
from .schedules import Schedule, from_pipeline, registered

log = logging.getLogger("nborch")
POLL_SECONDS = 5.0      # schedule changes apply within this; due slots start on time anyway
GRACE_SECONDS = 300.0   # on SIGTERM, how long running runs may go on before they are cancelled


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Scheduler:
    def __init__(self, home: str | Path | None = None, *, poll: float = POLL_SECONDS,
                 grace: float = GRACE_SECONDS, say: Callable[[str], None] = print,
                 listeners: Sequence = (), gc_older_than: float | None = None,
                 executor: str | None = None):
        if executor is not None:
            from ..execution.executors import check_target
            check_target(executor)
        self.executor = executor  # where its runs go, whatever their files say
        self.store = Store(home)
        self.poll, self.grace, self.say = poll, grace, say
        self.gc_older_than = gc_older_than  # seconds: once a day, delete runs that old
        self._next_gc: datetime | None = None
        self._gc: threading.Thread | None = None
        self.listeners = tuple(listeners)  # given to every run it starts (e.g. metrics)
        self.handles: dict = {}  # run id -> RunHandle of the runs this scheduler started
        self.loaded: dict = {}  # pipeline name -> the Pipeline as last loaded (its hooks)
        self.alerts: list[threading.Thread] = []  # hooks being sent outside a run
        self._stop = threading.Event()
        self._wake = threading.Event()  # a run ended: a slot it held back may start now
        self._lock_file: IO | None = None

    # -- life -------------------------------------------------------------------------

    def acquire(self, wait: bool = False) -> None:
        """Become the store's one active scheduler, or raise ``SchedulerBusy``."""
        self._lock_file = lock.acquire(self.store.home, wait, self._stop)

    def stop(self) -> None:
        """Stop starting runs (a signal handler may call this)."""
        self._stop.set()
        self._wake.set()

    def serve(self, wait_for_lock: bool = False) -> None:
        """Start due runs until ``stop()``; then let running runs finish within the grace
        period and cancel the rest."""
        self.check()
        self.acquire(wait_for_lock)
        if self._lock_file is None:
            return
        try:
            self.say(f"scheduler active for the store {self.store.home} (pid {os.getpid()})")
            while not self._stop.is_set():
                self.tick(_now())
                self._wake.wait(self._sleep_time(_now()))
                self._wake.clear()
            self._drain()
        finally:
            self._lock_file.close()
            self._lock_file = None

    def check(self) -> None:
        """Refuse schedules that run after one another in a cycle (``SpecError``); warn of
        those after a pipeline the store does not know (yet)."""
        schedules = registered(self.store)
        after.check_cycles(schedules)
        known = self.store.known_pipelines()
        for schedule in schedules:
            for warning in after.unknown_upstreams(schedule, known):
                self.say(f"warning: {warning}")

    # -- one tick ---------------------------------------------------------------------

    def tick(self, now: datetime) -> list[str]:
        """Start the runs that are due at ``now``; their run ids."""
        started = []
        self._collect_garbage(now)
        schedules = registered(self.store)
        self._report_crashes(schedules)
        for schedule in schedules:
            if schedule.paused:
                continue
            if schedule.after:
                started += self._start_after(schedule)
                continue
            due = schedule.due(now)
            if not due:
                continue
            active = self.store.running_count(schedule.pipeline)
            for slot in due:
                if active >= schedule.max_active_runs:
                    break  # the slot stays due: it starts when a run ends (or is dropped
                    # for a newer one when catchup is off)
                run_id = self._start(schedule, slot)
                self.store.update_schedule(schedule.pipeline, last_slot=slot.isoformat())
                if run_id:
                    started.append(run_id)
                    active += 1
        for schedule in schedules:  # after starting: a slot's alert names the run just started
            sla.judge(self.store, schedule, now, self._sla_missed)
        return started

    def _start_after(self, schedule: Schedule) -> list[str]:
        """Start a run for each success of an upstream pipeline not reacted to yet, as
        ``max_active_runs`` allows (the others wait for a run to end)."""
        started = []
        active = self.store.running_count(schedule.pipeline)
        for upstream in self.store.untriggered_successes(schedule.pipeline, schedule.after,
                                                         schedule.created_at or ""):
            if active >= schedule.max_active_runs:
                break
            if not self.store.claim_trigger(schedule.pipeline, upstream["run_id"]):
                continue  # another scheduler of this store reacted (it took over from us)
            self.say(f"{schedule.pipeline}: {upstream['pipeline']} run {upstream['run_id']} "
                     "succeeded")
            run_id = self._start(schedule, datetime.fromisoformat(upstream["logical_date"]),
                                 after_run=upstream["run_id"])
            if run_id:
                self.store.trigger_started(schedule.pipeline, upstream["run_id"], run_id)
                started.append(run_id)
                active += 1
        return started

    def _start(self, schedule: Schedule, slot: datetime,
               after_run: str | None = None) -> str | None:
        """Start a run of ``schedule`` for ``slot`` (its logical date); ``after_run``: the
        upstream run whose success it follows, for an ``after`` schedule."""
        from ..runtime.api import start_run
        from ..runtime.failures import record_not_started
        from ..spec.loader import load
        trigger = Trigger.AFTER if after_run else Trigger.SCHEDULE
        try:
            pipeline = self.loaded[schedule.pipeline] = load(schedule.source)
            # The one start of scheduled runs: on a cron slot, or after_run's success.
            handle = start_run(pipeline, params=schedule.params, logical_date=slot,
                               home=self.store.home, listeners=[self._ended, *self.listeners],
                               trigger=trigger, executor=self.executor)
        except StoreUnusable as exc:  # nothing can be recorded: say so, try the next slot
            self.say(f"{schedule.pipeline}: slot {slot.isoformat()} not started: {exc}")
            return None
        except NborchError as exc:  # the file was changed into something invalid, or removed
            self.say(f"{schedule.pipeline}: slot {slot.isoformat()} not started: {exc}")
            self._alerting(record_not_started(self.store, schedule.pipeline, schedule.source,
                                              slot, exc, self.loaded.get(schedule.pipeline),
                                              trigger=trigger))
            return None
        # Only the runs still going: a scheduler that runs for months keeps no ended run.
        self.handles = {k: h for k, h in self.handles.items() if not h.done}
        self.handles[handle.run_id] = handle
        self.say(f"{schedule.pipeline}: run {handle.run_id} started for {slot.isoformat()}")
        return handle.run_id

    def _ended(self, event) -> None:
        if isinstance(event, RunEnded):
            self.say(f"run {event.run_id} ended: {event.status}")
            self._wake.set()

    def _sla_missed(self, miss: sla.SlaMiss) -> None:
        from ..runtime.failures import report_sla_miss
        run = miss.run
        state = f"its run {run['run_id']} is {run['status']}" if run else "it has no run"
        self.say(f"{miss.pipeline}: slot {miss.slot.isoformat()} missed its SLA (not "
                 f"succeeded by {miss.deadline.isoformat()}; {state})")
        self._alerting(report_sla_miss(self.store, miss.pipeline, miss.slot.isoformat(),
                                       miss.sla, miss.deadline.isoformat(), run,
                                       self._pipeline(miss.pipeline)))

    def _pipeline(self, name: str):
        """The pipeline of the schedule ``name`` as it loads now, else as last loaded (its
        hooks fire even when the file has been broken since)."""
        from ..spec.loader import load
        by_name = {s.pipeline: s for s in registered(self.store)}
        try:
            self.loaded[name] = load(by_name[name].source)
        except (NborchError, KeyError):
            pass
        return self.loaded.get(name)

    def _report_crashes(self, schedules: list[Schedule]) -> None:
        """Record the runs whose process died, and fire ``on_failure`` (reason ``crashed``)
        for those of scheduled pipelines since they were scheduled, whoever recorded them."""
        from ..runtime.failures import report_crash
        self.store.mark_crashed()
        for run_id in self.store.unreported_crashes(
                {s.pipeline: s.created_at for s in schedules if s.created_at}):
            run = self.store.get_run(run_id)
            self.say(f"{run.pipeline}: run {run_id} crashed (its process died)")
            self._alerting(report_crash(self.store, run_id, self._pipeline(run.pipeline)))

    def _collect_garbage(self, now: datetime) -> None:
        """``--gc-older-than``: ``nborch gc`` once a day, first when the scheduler starts, in
        a thread of its own (removing thousands of folders takes a while; slots do not wait)."""
        if self.gc_older_than is None or (self._next_gc and now < self._next_gc):
            return
        from ..store.retention import collect
        self._next_gc = now + timedelta(days=1)
        cutoff = now - timedelta(seconds=self.gc_older_than)

        def run() -> None:
            try:
                self.say(f"gc: {collect(self.store, cutoff).summary()}")
            except (NborchError, OSError) as exc:  # tried again tomorrow
                self.say(f"gc failed: {exc}")
        self._gc = threading.Thread(target=run, name="nborch-gc")
        self._gc.start()

    def _alerting(self, thread: threading.Thread) -> None:
        self.alerts = [t for t in self.alerts if t.is_alive()] + [thread]

    def _sleep_time(self, now: datetime) -> float:
        """Until the next slot or SLA deadline, at most ``poll`` (``after`` schedules see
        upstream successes within it)."""
        upcoming = [moment for s in registered(self.store) if not s.paused
                    for moment in (s.next_slot(now), sla.next_deadline(s, now)) if moment]
        until = min(((slot - now).total_seconds() for slot in upcoming), default=self.poll)
        return max(0.05, min(self.poll, until))

    def _drain(self) -> None:
        if self._gc is not None:  # its rows are gone: let it remove their folders
            self._gc.join()
        for alert in self.alerts:  # hooks outside runs: each bounded by the hooks' limit
            alert.join()
        running = [h for h in self.handles.values() if not h.done]
        if not running:
            self.say("scheduler stopped")
            return
        self.say(f"scheduler stopping: waiting up to {self.grace:g}s for {len(running)} "
                 "running run(s)")
        deadline = time.monotonic() + self.grace
        for handle in running:
            try:
                handle.wait(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        late = [h for h in running if not h.done]
        for handle in late:
            handle.cancel()
        for handle in late:
            handle.wait()
        if late:
            self.say(f"scheduler stopped: cancelled {len(late)} run(s) still running after the "
                     f"grace period ({', '.join(h.run_id for h in late)})")
        else:
            self.say("scheduler stopped: every run finished")


# -- backfill ---------------------------------------------------------------------------------

def backfill(source: str | Path, start: date, end: date, *, max_parallel_runs: int = 1,
             rerun: bool = False, home: str | Path | None = None,
             say: Callable[[str], None] = print, params: dict | None = None,
             executor: str | None = None) -> list:
    """Run every slot of the pipeline's schedule from ``start`` to ``end`` (whole days, both
    included), oldest first, at most ``max_parallel_runs`` at once; slots that already
    succeeded are skipped unless ``rerun``. Each run gets the saved schedule's parameters
    updated by ``params``, and goes to ``executor``, else where the file says. Returns the
    finished Runs."""
    from ..runtime.api import run_executor, start_run
    from ..spec.loader import load
    from ..spec.validate import merge_params
    if end < start:
        raise SpecError(f"--end {end} is before --start {start}")
    if max_parallel_runs < 1:
        raise SpecError(f"--max-parallel-runs must be >= 1, not {max_parallel_runs}")
    pipeline = load(source)
    run_executor(pipeline, executor)  # a bad one fails now, not at the first slot
    store = Store(home)
    saved = {s.pipeline: s for s in registered(store)}
    schedule = saved.get(pipeline.name) or from_pipeline(pipeline)
    if not schedule.cron:
        raise SpecError(f"{pipeline.name} runs after {', '.join(schedule.after)}: it has no "
                        "slots to backfill (backfill those pipelines, or give it a cron "
                        "schedule)")
    zone = schedule.zone
    params = {**schedule.params, **(params or {})}
    merge_params(pipeline, params)  # an unknown name fails before any slot starts
    first = datetime.combine(start, dtime.min, zone) - timedelta(microseconds=1)
    last = datetime.combine(end, dtime.max, zone)
    todo = []
    for slot in schedule.slots(first, last):
        if not rerun and State.SUCCESS in store.runs_of_slot(pipeline.name, slot.isoformat()):
            say(f"{slot.isoformat()}: already succeeded, skipped")
            continue
        todo.append(slot)
    say(f"backfill of {pipeline.name}: {len(todo)} slot(s) to run")
    finished: list = []
    running: list = []
    try:
        for slot in todo:
            while len(running) >= max_parallel_runs:
                finished.append(running.pop(0).wait())
            handle = start_run(load(source), params=params, logical_date=slot, home=store.home,
                               trigger=Trigger.BACKFILL, executor=executor)
            say(f"{slot.isoformat()}: run {handle.run_id} started")
            running.append(handle)
        while running:
            finished.append(running.pop(0).wait())
    except KeyboardInterrupt:  # stop the whole backfill, not only the run waited for
        for handle in running:
            handle.cancel()
        for handle in running:
            handle.wait()
        raise
    for run in finished:
        say(f"{run.logical_date}: run {run.run_id} {run.status}")
    return finished
