"""Task records as the store's rows: how a ``TaskRun`` is read from and written to
``task_runs``, and how an event is folded into its row (by ``core.run.fold_task``, the rule
the live Run follows too)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..core.events import AttemptProgress, TaskStateChanged
from ..core.run import TaskRun, fold_task


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# TaskRun fields whose task_runs column is named otherwise, and those stored as JSON.
_COLUMN = {"values": "vals"}
_JSON = frozenset({"values", "error", "progress", "command", "products", "own_values"})


def task_run(row: sqlite3.Row) -> TaskRun:
    """A task_runs row as the TaskRun it records."""
    return TaskRun(
        name=row["task"], status=row["status"], attempts=row["attempts"],
        started_at=row["started_at"], ended_at=row["ended_at"], output_path=row["output_path"],
        values=loads(row["vals"]) or {}, error=loads(row["error"]), reason=row["reason"],
        progress=loads(row["progress"]), upstream=tuple(loads(row["upstream"])),
        notebook=row["notebook"], fingerprint=row["fingerprint"], result_of=row["result_of"],
        grid=row["grid"], command=loads(row["command"]), products=loads(row["products"]) or {},
        pool=row["pool"], own_values=loads(row["own_values"]))


def update_task(conn: sqlite3.Connection, run_id: str, task: str, changes: dict) -> None:
    """Write the changed fields of a task's TaskRun (``fold_task``, ``fold_resume``)."""
    if not changes:
        return
    sets = ", ".join(f"{_COLUMN.get(field, field)} = ?" for field in changes)
    args = [dumps(value) if field in _JSON else value for field, value in changes.items()]
    conn.execute(f"UPDATE task_runs SET {sets} WHERE run_id = ? AND task = ?",
                 (*args, run_id, task))


def fold_into_row(conn: sqlite3.Connection, e: TaskStateChanged | AttemptProgress) -> None:
    """Fold an event into its task's row, by the rule the live Run follows."""
    row = conn.execute("SELECT * FROM task_runs WHERE run_id = ? AND task = ?",
                       (e.run_id, e.task)).fetchone()
    if row is not None:
        update_task(conn, e.run_id, e.task, fold_task(task_run(row), e))
