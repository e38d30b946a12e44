"""Crashed runs: telling a run whose orchestrating process died from a live one, what it
becomes, and stopping the kernels it left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from ..core.clock import utcnow
from ..core.errors import error_dict
from ..core.events import RunEnded, TaskStateChanged
from ..core.states import WAITING, State

HOST = socket.gethostname()
# A run on another host whose heartbeat is older than this is taken for crashed.
STALE_HEARTBEAT_SECONDS = 90.0


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it does not exist.

    With the pid, this identifies a process even after the pid is reused.
    """
    import psutil
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_dead(row: sqlite3.Row) -> bool:
    """Whether a run's orchestrating process is gone. On this host a run is alive while its
    process (pid and start time) exists; a run of another host while its heartbeat is
    fresh."""
    if row["host"] == HOST and row["pid"]:
        started = process_started(row["pid"])
        return started is None or (row["pid_started"] is not None
                                   and abs(started - row["pid_started"]) > 1.0)
    return time.time() - (row["heartbeat_at"] or 0) > STALE_HEARTBEAT_SECONDS


def last_beat(row: sqlite3.Row) -> str:
    beat = datetime.fromtimestamp(row["heartbeat_at"] or time.time(), timezone.utc)
    return beat.isoformat(timespec="milliseconds")


def crash_events(run, row: sqlite3.Row) -> list:
    """What a run whose process died becomes, as the events that say so: its running tasks
    failed (``OrchestratorDied``), its waiting ones cancelled, the run crashed at its last
    heartbeat. The store records them; a read applies them to the Run it shows."""
    now = utcnow()
    error = error_dict("OrchestratorDied", f"the nborch process (pid {row['pid']} on "
                       f"{row['host']}) died while this task ran")
    events: list = []
    for name, t in run.tasks.items():
        if t.status == State.RUNNING:
            events.append(TaskStateChanged(run.run_id, name, State.FAILED, t.attempts, now,
                                           error=error, reason="the run crashed",
                                           attempt_status=State.FAILED))
        elif t.status in WAITING:
            events.append(TaskStateChanged(
                run.run_id, name, State.CANCELLED, t.attempts, now,
                reason="the run crashed before this task could run"))
    return events + [RunEnded(run.run_id, State.CRASHED, last_beat(row))]


def stop_orphan_kernel(pid: int, run_id: str) -> bool:
    """Kill a kernel left by a crashed run, if it still runs and is that run's kernel, and
    remove its connection file and IPC sockets (nobody else will)."""
    import psutil
    try:
        proc = psutil.Process(pid)
        if proc.environ().get("NBORCH_RUN_ID") != run_id:
            return False  # the pid was reused by an unrelated process
        cmdline = proc.cmdline()
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return False
    if "-f" in cmdline[:-1]:
        _remove_connection_files(cmdline[cmdline.index("-f") + 1])
    return True


def _remove_connection_files(connection_file: str) -> None:
    try:
        info = json.loads(Path(connection_file).read_text())
    except (OSError, ValueError):
        return
    paths = [connection_file]
    if info.get("transport") == "ipc":
        paths += [f"{info['ip']}-{info[key]}" for key in
                  ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
                  if key in info]
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass
    folder = os.path.dirname(info.get("ip") or "")
    if info.get("transport") == "ipc" and os.path.basename(folder).startswith("nborch-ipc-"):
        try:
            os.rmdir(folder)  # the dead process's private IPC folder, once it is empty
        except OSError:
            pass
