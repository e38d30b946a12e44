"""Time as nborch records and reads it: timestamps, and durations such as ``10s``, ``5m``,
``1h30m``."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any


def utcnow() -> str:
    """Now, as every record stores it: ISO 8601 in UTC, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def parse_time(iso: str) -> datetime:
    """A recorded ISO time as an aware datetime (one without an offset is UTC)."""
    when = datetime.fromisoformat(iso)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds, or text like ``90s``, ``5m``, ``1h30m``.

    Raises ValueError with a message fit for a user.
    """
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: use a number of seconds "
                         "or text like 10s, 5m, 1h")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):  # "nan", "inf": no length of time
            raise ValueError(f"bad duration {value!r}: use a number of seconds "
                             "or text like 10s, 5m, 1h30m")
        if value < 0:
            raise ValueError(f"bad duration {value!r}: must not be negative")
        return float(value)
    text = str(value).strip().lower()
    try:
        return parse_duration(float(text))  # "10" in quotes is still ten seconds
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos and text[pos:match.start()].strip():
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or text[pos:].strip() or pos == 0:
        raise ValueError(f"bad duration {value!r}: use a number of seconds "
                         "or text like 10s, 5m, 1h30m")
    return total


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
