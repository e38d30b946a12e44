"""Alerts for runs no engine drives: a scheduled slot that could not start, a run found
crashed. Both are recorded in the store and fire the pipeline's ``on_failure`` hooks, with
``reason`` ``not_started`` or ``crashed`` in the payload (docs/scheduling.md)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime

from ..core.clock import utcnow
from ..core.errors import NborchError, error_dict
from ..core.events import RunEnded, RunStarted
from ..core.model import Pipeline
from ..core.run import Run
from ..core.triggers import Trigger
from ..spec.validate import settings
from ..store.store import Store
from .api import new_run_id
from .hooks import HookRunner

log = logging.getLogger("nborch")


def record_not_started(store: Store, name: str, source: str, logical_date: datetime,
                       error: NborchError, pipeline: Pipeline | None,
                       trigger: Trigger = Trigger.SCHEDULE) -> threading.Thread:
    """Record a run of ``name`` for ``logical_date`` that failed before it started, with
    ``error`` as its error; fire the ``on_failure`` hooks of ``pipeline`` (the file as it
    was last loaded, when it no longer loads). Returns the thread sending the alerts."""
    started = RunStarted(new_run_id(), name, utcnow(), logical_date.isoformat(), {}, {}, source,
                         os.getpid(), socket.gethostname(), trigger=trigger)
    ended = RunEnded(started.run_id, "failed", utcnow(),
                     error=error_dict(type(error).__name__, str(error)))
    store.record([started, ended])
    run = Run.from_start(started)
    run.status, run.ended_at, run.error = ended.status, ended.ended_at, ended.error
    return _alert(store, run, pipeline, ended, "not_started")


def report_crash(store: Store, run_id: str, pipeline: Pipeline | None) -> threading.Thread:
    """Fire the ``on_failure`` hooks of a run recorded as crashed; the store then knows it
    was told."""
    run = store.get_run(run_id)
    thread = _alert(store, run, pipeline, RunEnded(run_id, "crashed", run.ended_at or utcnow()),
                    "crashed")
    store.crash_reported(run_id)
    return thread


def _alert(store: Store, run: Run, pipeline: Pipeline | None, ended: RunEnded,
           reason: str) -> threading.Thread:
    """Send the run's end to its pipeline's hooks on a thread of its own (a slow webhook
    holds up no scheduler tick); the process waits for it before it exits."""
    hooks = pipeline.hooks if pipeline is not None else {}
    env = settings(pipeline) if pipeline is not None else dict(os.environ)
    secrets = [env[s] for t in (pipeline.tasks.values() if pipeline else ()) for s in t.secrets
               if s in env]
    runner = HookRunner(run, hooks, {}, store.run_dir(run.run_id) / "hooks.log", env, secrets,
                        reason=reason)
    thread = threading.Thread(target=runner, args=(ended,), name=f"nborch-alert-{run.run_id}")
    thread.start()
    return thread
