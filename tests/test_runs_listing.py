"""``nborch runs``: filters (--pipeline, --status, --since) and a limit that says so."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import nborch, run_json

from nborch.core.events import RunEnded, RunStarted
from nborch.store.store import Store


def _record(store: Store, run_id: str, pipeline: str, status: str, started: datetime) -> None:
    at = started.isoformat()
    store.record([RunStarted(run_id, pipeline, at, at, {}, {}, None, os.getpid(),
                             socket.gethostname()),
                  RunEnded(run_id, status, at)])


def test_runs_filters_and_says_when_the_limit_cut_the_list(workdir: Path):
    store = Store(workdir / ".nborch")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for day in range(10):  # r9 is the newest
        _record(store, f"r{day}", "daily" if day % 2 else "hourly",
                "failed" if day % 3 == 0 else "success", now - timedelta(days=10 - day))
    store.close()

    def listed(*args: str) -> list[str]:
        proc = nborch("runs", "--json", *args, cwd=workdir, check=True)
        return [r["run_id"] for r in run_json(proc)]

    assert listed("--status", "failed") == ["r9", "r6", "r3", "r0"]
    assert listed("--pipeline", "daily", "--status", "success") == ["r7", "r5", "r1"]
    assert listed("--since", "3d12h") == ["r9", "r8", "r7"]
    since = (now - timedelta(days=4)).date().isoformat()  # midnight, UTC
    assert listed("--since", since, "--status", "success") == ["r8", "r7"]
    cut = nborch("runs", "--limit", "3", cwd=workdir, check=True)
    assert "the 3 newest of 10 runs (--limit 3)" in cut.stdout
    none = nborch("runs", "--status", "cancelled", cwd=workdir, check=True)
    assert "no runs recorded yet cancelled" in none.stdout
    bad = nborch("runs", "--since", "last tuesday", cwd=workdir)
    assert bad.returncode == 2 and "--since 'last tuesday'" in bad.stderr
    assert "Traceback" not in bad.stderr
