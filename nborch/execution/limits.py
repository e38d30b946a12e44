"""Size caps of what an attempt keeps: its output (cells and log) and each published value.

``NBORCH_MAX_OUTPUT`` and ``NBORCH_MAX_VALUE`` (bytes; ``K``/``M``/``G`` suffixes, powers
of 1024) set them, from nborch's environment or a task's ``env``. Kept free of heavy
imports: ``nborch.publish`` checks a value's size inside the kernel with it.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from ..core.sizes import human, parse_size

MAX_OUTPUT_ENV = "NBORCH_MAX_OUTPUT"
MAX_VALUE_ENV = "NBORCH_MAX_VALUE"
DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024
DEFAULT_MAX_VALUE = 64 * 1024
log = logging.getLogger("nborch")


def _setting(name: str, default: int, env: dict | None) -> int:
    text = (env or {}).get(name, os.environ.get(name))
    if not text:
        return default
    try:
        return parse_size(text)
    except ValueError as exc:
        log.warning("%s: %s; using the default, %s", name, exc, human(default))
        return default


def max_output(env: dict | None = None) -> int:
    """Output kept per attempt, in bytes: a task's ``env`` wins over nborch's environment."""
    return _setting(MAX_OUTPUT_ENV, DEFAULT_MAX_OUTPUT, env)


def max_value(env: dict | None = None) -> int:
    """The largest published value, JSON-encoded, in bytes."""
    return _setting(MAX_VALUE_ENV, DEFAULT_MAX_VALUE, env)


def json_size(value) -> int:
    """Bytes of ``value`` as JSON (ASCII-escaped, so characters are bytes)."""
    return len(json.dumps(value))


class ValueTooLarge(ValueError):
    def __init__(self, name: str, size: int, limit: int):
        super().__init__(f"published value {name!r} is {size:,} bytes as JSON, over the limit "
                         f"of {human(limit)}; publish a path to a file instead "
                         f"(nborch.artifact_path), or set {MAX_VALUE_ENV} to allow more")
        self.name, self.size, self.limit = name, size, limit


class OutputLimit:
    """One attempt's output budget, shared by the cells' outputs kept in the executed
    notebook and the text of its log. Once an output does not fit, it and everything after
    it are dropped (only counted), and the log says so once, then gives the counts at the end
    (``finish``). Thread-safe: a command's stdout and stderr are read by two threads."""

    def __init__(self, limit: int, log_sink):
        self.limit, self.log_sink = limit, log_sink
        self.used = self.dropped = self.dropped_bytes = 0
        self._told = False
        self._lock = threading.Lock()

    def keep(self, size: int, force: bool = False, partial: bool = False) -> int:
        """How many of an output's ``size`` bytes are kept: all while they fit, else none,
        or with ``partial`` the part that fits; ``force``: all, always (still counted).
        Call ``tell`` once the kept part is written."""
        with self._lock:
            room = 0 if self.dropped else max(0, self.limit - self.used)
            kept = size if force or size <= room else (room if partial else 0)
            self.used += kept
            if kept < size:
                self.dropped += 1
                self.dropped_bytes += size - kept
        return kept

    def tell(self) -> None:
        """Once output was dropped, say so in the log, once."""
        with self._lock:
            if not self.dropped or self._told:
                return
            self._told = True
        self.log_sink.write(f"\nnborch: output limit of {human(self.limit)} reached; further "
                            f"output of this attempt is dropped (set {MAX_OUTPUT_ENV} to keep "
                            "more)\n")

    def release(self, size: int) -> None:
        """Kept output that was cleared (``clear_output``) no longer counts."""
        with self._lock:
            self.used = max(0, self.used - size)

    def marker(self, count: int, size: int) -> str:
        return (f"nborch: output limit of {human(self.limit)} reached; {count:,} more output "
                f"messages ({size:,} bytes) were dropped; set {MAX_OUTPUT_ENV} to keep more\n")

    def finish(self) -> None:
        if self.dropped:
            self.log_sink.write(self.marker(self.dropped, self.dropped_bytes))

    def wrap(self, sink) -> CappedSink:
        return CappedSink(self, sink)


class CappedSink:
    """A log stream (``write``/``flush``) that drops what the attempt's budget cannot hold."""

    def __init__(self, limit: OutputLimit, sink):
        self.limit, self.sink = limit, sink

    def write(self, text: str) -> None:
        if text and (kept := self.limit.keep(len(text), partial=True)):
            self.sink.write(text[:kept])
        self.limit.tell()

    def flush(self) -> None:
        self.sink.flush()


PIECE = 1024 * 1024  # characters of a kernel's stream message, at most

# Run (silently) in each ipykernel kernel before the notebook; harmless if nborch is absent.
KERNEL_SETUP = ("try:\n"
                "    __import__('nborch.execution.limits').execution.limits.split_stream_output()\n"
                "except Exception:\n    pass")


def split_stream_output() -> None:
    """In a kernel: send stdout and stderr in messages of at most ``PIECE`` characters.
    ipykernel sends all a cell printed within 0.2 s as one message, however large (a
    loop printing 256 MiB makes one message of 256 MiB); in pieces, the orchestrator drops
    what is over its limit a piece at a time instead of holding all of it at once."""
    import functools
    import sys
    for stream in (sys.stdout, sys.stderr):
        if callable(getattr(stream, "register_hook", None)) and hasattr(stream, "pub_thread"):
            # Hooks are per thread: the stream's messages are sent from its IO thread.
            stream.pub_thread.schedule(functools.partial(
                stream.register_hook, functools.partial(_send_in_pieces, stream)))


def _send_in_pieces(stream, msg):
    text = msg["content"].get("text", "")
    if len(text) <= PIECE:
        return msg
    for start in range(0, len(text), PIECE):
        piece = stream.session.msg("stream", {"name": stream.name,
                                              "text": text[start:start + PIECE]},
                                   parent=msg["parent_header"])
        stream.session.send(stream.pub_thread, piece, ident=stream.topic)
    return None  # sent
