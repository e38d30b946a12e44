"""The scheduler's hold on a store: an exclusive lock on ``scheduler.lock`` in the store's
folder (released by the OS however the process ends), and in that file who holds it (pid,
host, since when), for ``nborch scheduler status`` and a second scheduler's message."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import IO

from ..core.clock import utcnow
from ..core.errors import SchedulerBusy
from ..core.private import makedirs, opener
from ..store.crashes import HOST, process_started

LOCK_NAME = "scheduler.lock"


def acquire(home: Path, wait: bool, stop: threading.Event) -> IO | None:
    """Hold the store's scheduler lock (keep the returned file open), or raise
    ``SchedulerBusy``; with ``wait``, wait for it, and return None if ``stop`` is set first."""
    makedirs(home)
    handle = open(home / LOCK_NAME, "a+", opener=opener)
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not wait:
                handle.seek(0)
                info = _parse(handle.read())
                handle.close()
                raise SchedulerBusy(
                    f"another scheduler is already active for the store {home} "
                    f"({describe(info) if info else 'another process'}); only one may run per "
                    "store (use --wait to take over when it stops)") from None
            if stop.wait(1.0):
                handle.close()
                return None
    pid = os.getpid()
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": pid, "host": HOST, "since": utcnow(),
                             "pid_started": process_started(pid)}) + "\n")
    handle.flush()
    return handle


def holder(home: Path) -> dict | None:
    """Who holds the store's scheduler lock (``pid``, ``host``, ``since``), or None. Read
    without taking the lock: on this host, from whether the recorded process still lives."""
    try:
        with open(home / LOCK_NAME, encoding="utf-8") as handle:
            text = handle.read()
            info = _parse(text)
            # Another host sharing the folder, or an older nborch's scheduler: ask the lock.
            if info is None and text.strip() or info is not None and info.get("host") != HOST:
                return (info or {"pid": None}) if _held(handle) else None
    except FileNotFoundError:
        return None
    if info is None:
        return None
    started = process_started(info["pid"])
    alive = started is not None and (info.get("pid_started") is None
                                     or abs(started - info["pid_started"]) <= 1.0)
    return info if alive else None


def _held(handle: IO) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when the file closes
        return False
    except BlockingIOError:
        return True


def describe(info: dict) -> str:
    if info.get("pid") is None:
        return "another process"
    return f"pid {info['pid']} on {info.get('host', '?')}, since {info.get('since', '?')}"


def _parse(text: str) -> dict | None:
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None
