"""Retention: deleting runs that ended long ago, with their folders (executed notebooks,
logs, hook logs, artifacts), as ``nborch gc`` and ``nborch scheduler --gc-older-than`` do.

A run is expired when it ended before the cutoff; a running run never is (a run whose
process died is recorded as crashed first, so it expires from its last heartbeat). Its rows
go in one transaction that checks again that it has not started since (a resume), then its
folder. Notebooks a run wrote under ``--output-dir`` are outside the store and are kept.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..core.clock import parse_time
from ..core.sizes import human
from ..core.states import State
from .crashes import is_dead, last_beat
from .store import Store

# Tables holding a run's rows, children first.
RUN_TABLES = ("attempts", "task_runs", "runs")


@dataclass
class Collected:
    """What a collection deleted (or, in a dry run, would delete)."""
    ended_before: datetime  # the cutoff: runs that ended before it
    run_ids: list[str] = field(default_factory=list)
    freed: int = 0  # bytes of the run folders
    elsewhere: list[str] = field(default_factory=list)  # runs whose notebooks are kept outside
    dry_run: bool = False

    def summary(self) -> str:
        """``deleted 12 runs that ended before 2026-10-30 21:40 UTC, 3.4 MiB freed``."""
        n = len(self.run_ids)
        cutoff = self.ended_before.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        runs = f"{n} run{'' if n == 1 else 's'} that ended before {cutoff}"
        text = (f"would delete {runs}, {human(self.freed)} would be freed (dry run)"
                if self.dry_run else f"deleted {runs}, {human(self.freed)} freed")
        if self.elsewhere:
            text += (f"; the notebooks of {len(self.elsewhere)} of them are under their "
                     "--output-dir, outside the store, and are kept")
        return text

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "ended_before": self.ended_before.isoformat(),
                "runs": len(self.run_ids), "run_ids": self.run_ids,
                "bytes_freed": self.freed, "notebooks_kept_elsewhere": self.elsewhere}


def collect(store: Store, ended_before: datetime, *, keep_failed: bool = False,
            dry_run: bool = False) -> Collected:
    """Delete the runs that ended before ``ended_before`` (with ``keep_failed``: not those
    that failed or crashed); with ``dry_run``, only say which."""
    collected = Collected(ended_before, dry_run=dry_run)
    if not store.exists:
        return collected
    if not dry_run:  # a dead run's process will not end it: it ended at its last beat
        store.mark_crashed()
    expired = _expired(store, ended_before, keep_failed)
    if not dry_run:
        expired = _delete_rows(store, expired)
    for run_id, output_dir in expired:
        folder = store.run_dir(run_id)
        collected.run_ids.append(run_id)
        collected.freed += folder_size(folder)
        if output_dir:
            collected.elsewhere.append(run_id)
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    return collected


def _expired(store: Store, ended_before: datetime, keep_failed: bool) -> list[tuple[str, str]]:
    kept = {State.RUNNING} | ({State.FAILED, State.CRASHED} if keep_failed else set())
    expired = []
    for r in store._read("SELECT run_id, status, ended_at, output_dir, pid, host, pid_started,"
                         " heartbeat_at FROM runs ORDER BY started_at, run_id"):
        status, ended_at = r["status"], r["ended_at"]
        if status == State.RUNNING and is_dead(r):  # as mark_crashed will record it
            status, ended_at = State.CRASHED, last_beat(r)
        if status not in kept and ended_at and parse_time(ended_at) < ended_before:
            expired.append((r["run_id"], r["output_dir"]))
    return expired


def _delete_rows(store: Store, expired: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Delete the rows of ``expired`` runs still ended; those deleted."""
    deleted = []
    with store._write() as conn:
        for run_id, output_dir in expired:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row["status"] == State.RUNNING:
                continue  # deleted by another collection, or resumed since it was read
            for table in RUN_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            deleted.append((run_id, output_dir))
    return deleted


def folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links not followed; 0 if there is none)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total

