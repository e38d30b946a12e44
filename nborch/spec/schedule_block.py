"""A pipeline's ``schedule:`` block, checked: when it runs (``cron`` and ``timezone``, or
``after`` other pipelines' successes), and its ``sla``. ``scheduling.schedules`` reads the
same keys into a ``Schedule`` with the readers here."""

from __future__ import annotations

from typing import Any

from ..core.clock import parse_duration
from ..core.errors import SpecError
from ..core.model import NAME_RE
from .yamltext import unknown_keys

SCHEDULE_KEYS = ("cron", "timezone", "catchup", "max_active_runs", "after", "sla")


def check_schedule(schedule: Any, where: str) -> list[str]:
    """Every problem of a ``schedule:`` block (``where`` names it in the messages)."""
    if not isinstance(schedule, dict):
        return [f"{where}: must be a mapping with 'cron' (or 'after')"]
    problems = unknown_keys(schedule, SCHEDULE_KEYS, where)
    cron, after = schedule.get("cron"), schedule.get("after")
    if cron is not None and after is not None:
        problems.append(f"{where}: give 'cron' or 'after', not both (a run started after "
                        "another pipeline takes that run's logical date; a cron slot is its own)")
    elif after is not None:
        problems += _problems(read_after, after, where)
    elif not isinstance(cron, str):
        problems.append(f"{where}: 'cron' must be a cron expression such as \"0 6 * * *\" "
                        "(or give 'after: [PIPELINE]' to run after another pipeline succeeds)")
    else:
        from croniter import croniter
        if not croniter.is_valid(cron):
            problems.append(f"{where}: bad cron expression {cron!r} (five fields: minute hour "
                            "day-of-month month day-of-week)")
    if schedule.get("sla") is not None:
        problems += _problems(read_sla, schedule["sla"], where)
        if after is not None and cron is None:
            problems.append(f"{where}: 'sla' needs 'cron' (it is measured from each slot; a "
                            "schedule with 'after' has no slots)")
    tz = schedule.get("timezone")
    if tz is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"{where}: unknown timezone {tz!r} "
                            "(use an IANA name like Europe/Berlin)")
    return problems


def read_after(value: Any, where: str) -> tuple[str, ...]:
    """``after: ingest`` or ``after: [ingest, prices]``: the pipelines whose successful runs
    start this one."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(
            isinstance(n, str) and NAME_RE.fullmatch(n) for n in names):
        raise SpecError(f"{where}: 'after' must be a pipeline name or a list of them, e.g. "
                        f"after: [ingest], not {value!r}")
    return tuple(dict.fromkeys(names))


def read_sla(value: Any, where: str) -> float:
    """``sla: 1h``: seconds after a slot by which its run must have succeeded."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise SpecError(f"{where}: sla: {exc}") from None
    if seconds <= 0:
        raise SpecError(f"{where}: sla must be more than 0, not {value!r}")
    return seconds


def _problems(reader, value: Any, where: str) -> list[str]:
    try:
        reader(value, where)
        return []
    except SpecError as exc:
        return exc.problems
