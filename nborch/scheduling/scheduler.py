"""``nborch scheduler`` and ``nborch backfill``: start runs for the slots of schedules.

The scheduler is one long-running process per store (an exclusive lock on
``scheduler.lock`` in the store's folder, released by the OS if the process dies). Each
tick it re-reads the schedules from the store, so ``nborch schedule ...`` changes apply
without a restart, and starts a run for every due slot that ``max_active_runs`` allows,
with the slot as the run's ``logical_date``. Runs are ordinary runs of this process: the
store, ``nborch runs`` and the Jupyter views see them as they go.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path

from ..core.errors import NborchError, SchedulerBusy, SpecError, StoreUnusable
from ..core.events import RunEnded
from ..core.private import makedirs, opener
from ..core.states import State
from ..core.triggers import Trigger
from ..store.store import Store
from .schedules import Schedule, from_pipeline, registered

log = logging.getLogger("nborch")
LOCK_NAME = "scheduler.lock"
POLL_SECONDS = 5.0      # schedule changes apply within this; due slots start on time anyway
GRACE_SECONDS = 300.0   # on SIGTERM, how long running runs may go on before they are cancelled


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Scheduler:
    def __init__(self, home: str | Path | None = None, *, poll: float = POLL_SECONDS,
                 grace: float = GRACE_SECONDS, say: Callable[[str], None] = print,
                 listeners: Sequence = (), gc_older_than: float | None = None):
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
        self._lock_file = None

    # -- life -------------------------------------------------------------------------

    def acquire(self, wait: bool = False) -> None:
        """Become the store's one active scheduler, or raise ``SchedulerBusy``."""
        makedirs(self.store.home)
        handle = open(self.store.home / LOCK_NAME, "a+", opener=opener)
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    raise SchedulerBusy(
                        f"another scheduler is already active for the store {self.store.home} "
                        f"({holder}); only one may run per store (use --wait to take over when "
                        "it stops)") from None
                if self._stop.wait(1.0):
                    handle.close()
                    return
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._lock_file = handle

    def stop(self) -> None:
        """Stop starting runs (a signal handler may call this)."""
        self._stop.set()
        self._wake.set()

    def serve(self, wait_for_lock: bool = False) -> None:
        """Start due runs until ``stop()``; then let running runs finish within the grace
        period and cancel the rest."""
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
        return started

    def _start(self, schedule: Schedule, slot: datetime) -> str | None:
        from ..runtime.api import start_run
        from ..runtime.failures import record_not_started
        from ..spec.loader import load
        try:
            pipeline = self.loaded[schedule.pipeline] = load(schedule.source)
            handle = start_run(pipeline, params=schedule.params, logical_date=slot,
                               home=self.store.home, listeners=[self._ended, *self.listeners],
                               trigger=Trigger.SCHEDULE)
        except StoreUnusable as exc:  # nothing can be recorded: say so, try the next slot
            self.say(f"{schedule.pipeline}: slot {slot.isoformat()} not started: {exc}")
            return None
        except NborchError as exc:  # the file was changed into something invalid, or removed
            self.say(f"{schedule.pipeline}: slot {slot.isoformat()} not started: {exc}")
            self._alerting(record_not_started(self.store, schedule.pipeline, schedule.source,
                                              slot, exc, self.loaded.get(schedule.pipeline)))
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

    def _report_crashes(self, schedules: list[Schedule]) -> None:
        """Record the runs whose process died, and fire ``on_failure`` (reason ``crashed``)
        for those of scheduled pipelines since they were scheduled, whoever recorded them."""
        from ..runtime.failures import report_crash
        from ..spec.loader import load
        self.store.mark_crashed()
        by_name = {s.pipeline: s for s in schedules}
        for run_id in self.store.unreported_crashes(
                {s.pipeline: s.created_at for s in schedules if s.created_at}):
            run = self.store.get_run(run_id)
            self.say(f"{run.pipeline}: run {run_id} crashed (its process died)")
            try:
                pipeline = self.loaded[run.pipeline] = load(by_name[run.pipeline].source)
            except NborchError:
                pipeline = self.loaded.get(run.pipeline)
            self._alerting(report_crash(self.store, run_id, pipeline))

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
        upcoming = [s.next_slot(now) for s in registered(self.store) if not s.paused]
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
             say: Callable[[str], None] = print, params: dict | None = None) -> list:
    """Run every slot of the pipeline's schedule from ``start`` to ``end`` (whole days, both
    included), oldest first, at most ``max_parallel_runs`` at once; slots that already
    succeeded are skipped unless ``rerun``. Each run gets the saved schedule's parameters
    updated by ``params``. Returns the finished Runs."""
    from ..runtime.api import start_run
    from ..spec.loader import load
    from ..spec.validate import merge_params
    if end < start:
        raise SpecError(f"--end {end} is before --start {start}")
    if max_parallel_runs < 1:
        raise SpecError(f"--max-parallel-runs must be >= 1, not {max_parallel_runs}")
    pipeline = load(source)
    store = Store(home)
    saved = {s.pipeline: s for s in registered(store)}
    schedule = saved.get(pipeline.name) or from_pipeline(pipeline)
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
    finished, running = [], []
    try:
        for slot in todo:
            while len(running) >= max_parallel_runs:
                finished.append(running.pop(0).wait())
            handle = start_run(load(source), params=params, logical_date=slot, home=store.home,
                               trigger=Trigger.BACKFILL)
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
