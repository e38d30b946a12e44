"""``Run`` and ``TaskRun``: what a run did, built live from events or loaded from the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import utcnow
from .events import AttemptProgress, RunEnded, RunStarted, TaskStateChanged


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    end_dt = datetime.fromisoformat(end or utcnow())
    return (end_dt - datetime.fromisoformat(start)).total_seconds()


@dataclass
class TaskRun:
    name: str
    status: str = "pending"
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
        if self.status == "running" and self.progress:
            data["progress"] = {"cell": self.progress["cell"], "cells": self.progress["cells"],
                                "line": self.progress.get("line", "")}
        return data


@dataclass
class Run:
    run_id: str
    pipeline: str
    status: str = "running"
    started_at: str | None = None
    ended_at: str | None = None
    logical_date: str | None = None
    params: dict = field(default_factory=dict)
    source: str | None = None
    tasks: dict = field(default_factory=dict)  # name -> TaskRun
    resumes: int = 0
    output_dir: str | None = None  # --output-dir of the run, if any
    error: dict | None = None  # the run's own error: why it could not start
    # Where the run lives, so ``resume()`` can find it again; not part of the record.
    home: Any = field(default=None, repr=False, compare=False)
    pipeline_obj: Any = field(default=None, repr=False, compare=False)

    @property
    def values(self) -> dict:
        """Published values by task name."""
        return {name: t.values for name, t in self.tasks.items()}

    @property
    def duration(self) -> float | None:
        return _seconds_between(self.started_at, self.ended_at)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks.values():
            out[t.status] = out.get(t.status, 0) + 1
        return out

    def resume(self, *, from_task: str | None = None, **options: Any) -> "Run":
        """Run again the tasks that did not succeed (with ``from_task``: that task and all
        downstream of it too), as a new attempt of this run; blocks and returns the Run."""
        from ..runtime.engine import resume_run
        return resume_run(self.run_id, pipeline=self.pipeline_obj, from_task=from_task,
                          home=self.home, **options).wait()

    def to_dict(self) -> dict:
        data = {"run_id": self.run_id, "pipeline": self.pipeline, "status": self.status,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "logical_date": self.logical_date, "params": self.params,
                "tasks": {name: t.to_dict() for name, t in self.tasks.items()}}
        if self.error is not None:
            data["error"] = self.error
        return data

    def apply(self, event: Any) -> None:
        """Follow the engine's events (a Run is a listener of its own run)."""
        if getattr(event, "run_id", None) != self.run_id:
            return
        if isinstance(event, TaskStateChanged):
            t = self.tasks[event.task]
            t.status, t.attempts, t.reason = event.state, event.attempt, event.reason
            if event.state == "running":
                t.started_at = t.started_at or event.at
                t.error, t.progress = None, None
            elif event.state != "pending" and event.state != "queued":
                t.progress = None
                if event.state != "retrying":
                    t.ended_at = event.at
                if event.output_path is not None:
                    t.output_path = event.output_path
                if event.values is not None:
                    t.values = event.values
                if event.error is not None or event.state == "success":
                    t.error = event.error
                t.fingerprint = event.fingerprint or t.fingerprint
                t.result_of = event.result_of or t.result_of
        elif isinstance(event, AttemptProgress):
            t = self.tasks[event.task]
            t.progress = {"cell": event.cell, "cells": event.cells, "line": event.line}
        elif isinstance(event, RunEnded):
            self.status, self.ended_at = event.status, event.ended_at

    @classmethod
    def from_start(cls, event: RunStarted) -> "Run":
        tasks = {name: TaskRun(name, upstream=tuple(t["upstream"]), notebook=t.get("notebook"),
                               grid=t.get("grid"), command=t.get("command"),
                               products=t.get("products") or {})
                 for name, t in event.tasks.items()}
        return cls(event.run_id, event.pipeline, "running", event.started_at, None,
                   event.logical_date, event.params, event.source, tasks)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.pipeline} {self.status} {self.counts()}>"
