"""What a view's Stop and Retry buttons do, for a run of this kernel or of any process.

A run started in this kernel (by ``%%orchestrate`` or a Retry) has its handle here, and
is stopped through it; a run of another process (the CLI, the scheduler, another notebook)
is stopped by a cancel request in the store, which its process reads at its next heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...core.run import Run

HANDLES: dict[str, Any] = {}  # run id -> RunHandle, for runs started in this kernel


def adopt(handle) -> None:
    HANDLES[handle.run_id] = handle


def live_handle(run_id: str):
    """The handle of a run of this kernel that has not ended, else None."""
    handle = HANDLES.get(run_id)
    return handle if handle is not None and not handle.done else None


def stop_action(run_id: str, home) -> Callable[[], None]:
    def stop() -> None:
        handle = live_handle(run_id)
        if handle is not None:
            handle.cancel()
        else:
            from ...store.store import Store
            Store(home).request_cancel(run_id)
    return stop


def resume(run: Run):
    """Resume ``run`` (its failed and not-run tasks) in the background, as the same run; the
    pipeline of a run this kernel started is reused (a notebook's cell has no file)."""
    from ...runtime.api import resume_run
    known = HANDLES.get(run.run_id)
    pipeline = run.pipeline_obj or (known.run.pipeline_obj if known is not None else None)
    handle = resume_run(run.run_id, pipeline=pipeline, home=run.home)
    adopt(handle)
    return handle
