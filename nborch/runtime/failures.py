"""Alerts for runs no engine drives: a scheduled slot that could not start, a run found
crashed. Both are recorded in the store and fire the pipeline's ``on_failure`` hooks, with
``reason`` ``not_started`` or ``crashed`` in the payload (docs/scheduling.md). And a slot
that missed its SLA, which fires ``on_sla_miss`` (whether or not it has a run)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime

from ..core.clock import utcnow
from ..core.errors import NborchError, error_dict
from ..core.events import RunEnded, RunStarted
from ..core.hooks import credentials
from ..core.model import Pipeline
from ..core.run import Run
from ..core.secrecy import Masker
from ..core.triggers import Trigger
from ..spec.validate import settings
from ..store.store import Store
from .api import new_run_id
from .hooks import HookRunner, deliver, sla_payload

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


def report_sla_miss(store: Store, name: str, slot: str, sla: float, deadline: str,
                    run: dict | None, pipeline: Pipeline | None) -> threading.Thread:
    """Fire the ``on_sla_miss`` hooks of ``pipeline`` for ``slot`` of the schedule of ``name``
    (``run``: the slot's newest run, as ``Store.slot_runs`` lists it, or None). Failures go
    to that run's ``hooks.log``, else to ``schedules/NAME/hooks.log`` in the store."""
    hooks = (pipeline.hooks if pipeline is not None else {}).get("on_sla_miss", ())
    env, secrets = _settings(pipeline)
    masker = Masker([*secrets, *credentials(list(hooks), env)])
    log_path = (store.run_dir(run["run_id"]) if run else store.home / "schedules" / name
                ) / "hooks.log"
    data = sla_payload(name, slot, sla, deadline, run)

    def send_all() -> None:  # one after another: an SLA miss has few hooks
        for hook in hooks:
            deliver(hook, data, env, masker, log_path, f"the slot {slot} of {name}")

    thread = threading.Thread(target=send_all, name=f"nborch-sla-{name}")
    thread.start()
    return thread


def _settings(pipeline: Pipeline | None) -> tuple[dict, list[str]]:
    """What the pipeline's hooks read (its .env under the environment), and its secrets'
    values (masked in what a failed hook logs)."""
    env = settings(pipeline) if pipeline is not None else dict(os.environ)
    secrets = [env[s] for t in (pipeline.tasks.values() if pipeline else ()) for s in t.secrets
               if s in env]
    return env, secrets


def _alert(store: Store, run: Run, pipeline: Pipeline | None, ended: RunEnded,
           reason: str) -> threading.Thread:
    """Send the run's end to its pipeline's hooks on a thread of its own (a slow webhook
    holds up no scheduler tick); the process waits for it before it exits."""
    hooks = pipeline.hooks if pipeline is not None else {}
    env, secrets = _settings(pipeline)
    runner = HookRunner(run, hooks, {}, store.run_dir(run.run_id) / "hooks.log", env, secrets,
                        reason=reason)
    thread = threading.Thread(target=runner, args=(ended,), name=f"nborch-alert-{run.run_id}")
    thread.start()
    return thread
