"""``Run`` and ``TaskRun``: what a run did, built live from events or loaded from the store.

``fold_task`` and ``fold_resume`` are the one rule for how events change a task's record:
the live Run applies what they return to its ``TaskRun``, the store writes it to its row.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import utcnow
from .events import AttemptProgress, RunEnded, RunStarted, TaskStateChanged
from .states import UNSTARTED, State


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    end_dt = datetime.fromisoformat(end or utcnow())
    return (end_dt - datetime.fromisoformat(start)).total_seconds()


@dataclass
class TaskRun:
    name: str
    status: str = State.PENDING
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    output_path: str | None = None
    values: dict = field(default_factory=dict)
    error: dict | None = None
    reason: str | None = None
    progress: dict | None = None
    upstream: tuple = ()
    notebook: str | None = None
    fingerprint: str | None = None
    result_of: str | None = None
    grid: str | None = None  # the grid this task is an instance of
    command: list | None = None  # a command task's argv
    products: dict = field(default_factory=dict)  # declared products: name -> path
    pool: str | None = None  # the pool whose slot it runs in
    own_values: dict | None = None  # a grid instance's own parameters (grouping.own_values)

    @property
    def duration(self) -> float | None:
        return _seconds_between(self.started_at, self.ended_at)

    def to_dict(self) -> dict:
        data = {"status": self.status, "attempts": self.attempts, "started_at": self.started_at,
                "ended_at": self.ended_at, "output_path": self.output_path, "values": self.values,
                "error": self.error, "upstream": list(self.upstream), "notebook": self.notebook}
        if self.reason:
            data["reason"] = self.reason
        if self.grid:
            data["grid"] = self.grid
        if self.command is not None:
            data["command"] = self.command
        if self.products:
            data["products"] = self.products
        if self.pool:
            data["pool"] = self.pool
        if self.own_values:
            data["own_values"] = self.own_values
        if self.status == State.RUNNING and self.progress:
            data["progress"] = {"cell": self.progress["cell"], "cells": self.progress["cells"],
                                "line": self.progress.get("line", "")}
        return data


@dataclass
class Run:
    run_id: str
    pipeline: str
    status: str = State.RUNNING
    started_at: str | None = None
    ended_at: str | None = None
    logical_date: str | None = None
    params: dict = field(default_factory=dict)
    source: str | None = None
    tasks: dict = field(default_factory=dict)  # name -> TaskRun
    resumes: int = 0
    output_dir: str | None = None  # --output-dir of the run, if any
    error: dict | None = None  # the run's own error: why it could not start
    trigger: str | None = None  # a Trigger; None for runs recorded before nborch kept it
    # Where the run lives, so ``resume()`` can find it again; not part of the record.
    home: Any = field(default=None, repr=False, compare=False)
    pipeline_obj: Any = field(default=None, repr=False, compare=False)
    grid_cache: Any = field(default=None, init=False, repr=False, compare=False)  # groups()

    @property
    def values(self) -> dict:
        """Published values by task name."""
        return {name: t.values for name, t in self.tasks.items()}

    @property
    def duration(self) -> float | None:
        return _seconds_between(self.started_at, self.ended_at)

    @property
    def ok(self) -> bool:
        return self.status == State.SUCCESS

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks.values():
            out[t.status] = out.get(t.status, 0) + 1
        return out

    def to_dict(self) -> dict:
        data = {"run_id": self.run_id, "pipeline": self.pipeline, "status": self.status,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "logical_date": self.logical_date, "trigger": self.trigger,
                "params": self.params,
                "tasks": {name: t.to_dict() for name, t in self.tasks.items()}}
        if self.error is not None:
            data["error"] = self.error
        return data

    def apply(self, event: Any) -> None:
        """Follow the engine's events (a Run is a listener of its own run)."""
        if getattr(event, "run_id", None) != self.run_id:
            return
        if isinstance(event, (TaskStateChanged, AttemptProgress)):
            t = self.tasks[event.task]
            for name, value in fold_task(t, event).items():
                setattr(t, name, value)
        elif isinstance(event, RunEnded):
            self.status, self.ended_at = event.status, event.ended_at
            self.error = event.error if event.error is not None else self.error

    @classmethod
    def from_start(cls, event: RunStarted) -> Run:
        tasks = {name: TaskRun(name, upstream=tuple(t["upstream"]), notebook=t.get("notebook"),
                               grid=t.get("grid"), command=t.get("command"),
                               products=t.get("products") or {}, pool=t.get("pool"),
                               own_values=t.get("own_values"))
                 for name, t in event.tasks.items()}
        return cls(event.run_id, event.pipeline, State.RUNNING, event.started_at, None,
                   event.logical_date, event.params, event.source, tasks,
                   trigger=event.trigger)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.pipeline} {self.status} {self.counts()}>"


def fold_task(task: TaskRun, event: TaskStateChanged | AttemptProgress) -> dict[str, Any]:
    """The fields of ``task`` that ``event`` changes, by name: how a task's record follows
    its events, for the live Run (``Run.apply``) and the store (``Store.task_changed``).

    A state change sets the state, attempt and reason. A start also sets when the task first
    started and clears its last error and progress; an attempt's end (a final state or a
    retry) clears progress and records what the event carries (notebook, values,
    fingerprint, whose result: each when given; the error when given or on success), and a
    final state when the task ended. Queueing records nothing more. Progress is recorded
    only while the task runs (a late report of an attempt that ended is dropped).
    """
    if isinstance(event, AttemptProgress):
        if task.status != State.RUNNING:
            return {}
        return {"progress": {"cell": event.cell, "cells": event.cells, "line": event.line}}
    state = event.state
    changes: dict[str, Any] = {"status": state, "attempts": event.attempt, "reason": event.reason}
    if state == State.RUNNING:
        changes.update(started_at=task.started_at or event.at, error=None, progress=None)
    elif state not in UNSTARTED:
        changes["progress"] = None
        if state != State.RETRYING:
            changes["ended_at"] = event.at
        for name in ("output_path", "values", "fingerprint", "result_of"):
            if getattr(event, name) is not None:
                changes[name] = getattr(event, name)
        if event.error is not None or state == State.SUCCESS:
            changes["error"] = event.error
    return changes


def fold_resume(started: RunStarted, name: str) -> dict[str, Any]:
    """The fields of task ``name`` that a resume (``started``, whose ``resumes`` > 0)
    changes, for the live Run and the store: the task as the resume announces it and, when
    it runs again, its outcome cleared back to pending (its attempt count, last notebook and
    values stay until it records new ones)."""
    record = started.tasks[name]
    changes: dict[str, Any] = {"grid": record.get("grid"), "command": record.get("command"),
                               "products": record.get("products") or {},
                               "pool": record.get("pool"), "own_values": record.get("own_values")}
    if name in started.rerun:
        changes.update(status=State.PENDING, started_at=None, ended_at=None, error=None,
                       reason=None, progress=None, fingerprint=None, result_of=None)
    return changes


def resumed_run(previous: Run, started: RunStarted) -> Run:
    """The live Run of a resume: kept tasks as they were, the others back to pending."""
    run = copy.deepcopy(previous)
    run.status, run.ended_at, run.resumes = State.RUNNING, None, started.resumes
    run.trigger = started.trigger
    for name, t in run.tasks.items():
        for key, value in fold_resume(started, name).items():
            setattr(t, key, value)
    return run
