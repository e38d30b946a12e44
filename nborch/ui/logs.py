"""Reading a task's log: all of it, or followed while the task runs (``logs --follow``).

A log holds whatever the task printed, so it is shown as text, never as commands to the
terminal: colours (SGR sequences) are kept on a terminal and dropped elsewhere, and every
other escape sequence or control character (a window title, OSC 52's clipboard, cursor
moves) is shown as ``\x1b`` and the like, as ``nborch show`` shows task names."""

from __future__ import annotations

import re
import time
from typing import IO

from ..core.states import FINAL
from ..store.store import Store
from .console import printable

POLL_SECONDS = 0.2
_CR_LINE = re.compile(r"[^\n]*\r(?=[^\n])")
_SGR = re.compile(r"(\x1b\[[0-9;]*m)")  # colours and text styles, nothing else


def shown(text: str, colours: bool) -> str:
    """``text`` of a log as it may reach a terminal (see the module's docstring)."""
    parts = _SGR.split(text.rstrip("\r"))  # odd items are the SGR sequences
    return "".join(part if i % 2 else printable(part)
                   for i, part in enumerate(parts) if colours or not i % 2)


def collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show: a line rewritten with ``\\r`` (a progress bar) keeps
    only its last version, so a bar does not become hundreds of lines."""
    return _CR_LINE.sub("", text.replace("\r\n", "\n"))


def print_log(store: Store, run_id: str, task: str, out: IO[str]) -> bool:
    path = store.log_path(run_id, task)
    if not path.exists():
        return False
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:  # keep the \r
        out.write(shown(collapse_carriage_returns(fh.read()), out.isatty()))
    return True


def follow_log(store: Store, run_id: str, task: str, out: IO[str]) -> None:
    """Print the log as it grows until the task is no longer waiting or running.

    Another process writes the log, so this polls the file (as ``tail -f`` does). A line
    that is still being rewritten with ``\\r`` is held back until it is complete or the
    task ends; on a terminal it is shown as it changes.
    """
    path = store.log_path(run_id, task)
    on_terminal = out.isatty()
    pending, offset, partial_shown = "", 0, False
    while True:
        ended = store.get_run(run_id).tasks[task].status in FINAL
        if path.exists():
            with open(path, encoding="utf-8", errors="replace", newline="") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
            if chunk:
                head, sep, pending = (pending + chunk).rpartition("\n")
                if sep:
                    out.write(("\r\x1b[K" if partial_shown else "")
                              + shown(collapse_carriage_returns(head + "\n"), on_terminal))
                    partial_shown = False
                if on_terminal and pending:
                    out.write("\r\x1b[K" + shown(pending.rsplit("\r", 1)[-1], True))
                    partial_shown = True
                out.flush()
        if ended:
            if pending:
                out.write(("\r\x1b[K" if partial_shown else "")
                          + shown(collapse_carriage_returns(pending), on_terminal) + "\n")
            out.flush()
            return
        time.sleep(POLL_SECONDS)
