"""Schedules: a pipeline file, a cron expression and a time zone, and the slots they make;
or a pipeline file and the pipelines after whose successful runs it runs (``after``).

Cron is read by croniter on *wall-clock* time in the schedule's zone, then each slot is
placed in the zone with ``zoneinfo``: a daily 02:30 runs once on the day clocks spring
forward (at 03:30, the first wall time that exists) and once on the day they fall back
(the first 02:30), never skipped and never doubled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..core.errors import SpecError
from ..spec.schedule_block import read_after, read_sla

DEFAULT_TIMEZONE = "UTC"


@dataclass
class Schedule:
    pipeline: str           # the pipeline's name (one schedule per pipeline and store)
    source: str             # the pipeline file (or folder), absolute
    cron: str | None        # None: it runs ``after`` other pipelines instead
    timezone: str = DEFAULT_TIMEZONE
    catchup: bool = False
    max_active_runs: int = 1
    paused: bool = False
    last_slot: str | None = None   # the newest slot started (ISO, in the schedule's zone)
    created_at: str | None = None  # slots before this are not due (ISO, UTC)
    after: tuple[str, ...] = ()    # a run starts after each success of one of these pipelines
    sla: float | None = None       # seconds after a slot by which its run must have succeeded
    sla_checked: str | None = None  # the newest slot whose SLA was judged (scheduling.sla)
    params: dict = field(default_factory=dict)  # -p of `schedule add`, given to every run

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def slots(self, after: datetime, until: datetime | None) -> Iterator[datetime]:
        """Every slot strictly after ``after`` up to ``until`` (inclusive; None: no end),
        oldest first, as aware datetimes in the schedule's zone (none for an ``after``
        schedule)."""
        return slots(self.cron, self.zone, after, until) if self.cron else iter(())

    def next_slot(self, now: datetime) -> datetime | None:
        """The first slot after ``now``; None for a schedule that runs ``after`` others."""
        return next(slots(self.cron, self.zone, now, None)) if self.cron else None

    def due(self, now: datetime) -> list[datetime]:
        """The slots that should start now: all missed ones with ``catchup``, else the newest."""
        if not self.cron:
            return []
        after = datetime.fromisoformat(self.last_slot or self.created_at or now.isoformat())
        missed = list(self.slots(after, now))
        return missed if self.catchup else missed[-1:]

    def to_dict(self) -> dict:
        return asdict(self)


def registered(store) -> list[Schedule]:
    """The schedules saved in ``store``, by pipeline."""
    return [Schedule(**record) for record in store.schedule_records()]


def check_cron(expr: object, where: str = "") -> str:
    from croniter import croniter
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise SpecError(f"{where}bad cron expression {expr!r} (five fields: minute hour "
                        "day-of-month month day-of-week, e.g. \"0 6 * * *\")")
    return expr


def check_timezone(name: object, where: str = "") -> str:
    try:
        ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(f"{where}unknown timezone {name!r} (use an IANA name such as "
                        "Europe/Berlin or UTC)") from None
    return str(name)


def slots(cron: str, zone: ZoneInfo, after: datetime, until: datetime | None
          ) -> Iterator[datetime]:
    """Slots of ``cron`` in ``zone`` strictly after ``after`` and up to ``until`` (None: no
    end). ``after`` and ``until`` are aware datetimes in any zone."""
    from croniter import croniter
    start = after.astimezone(zone)
    # Iterate on naive wall-clock time: croniter then never sees a DST jump.
    walker = croniter(cron, start.replace(tzinfo=None) - timedelta(hours=3))
    last_wall = None
    while True:
        wall = walker.get_next(datetime)
        if wall == last_wall:
            continue
        last_wall = wall
        slot = _place(wall, zone)
        if slot <= after:
            continue
        if until is not None and slot > until:
            return
        yield slot


def _place(wall: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in ``zone``; a time the spring-forward gap skipped moves to the
    first wall time after the gap, an ambiguous one (fall back) is its first occurrence."""
    slot = wall.replace(tzinfo=zone, fold=0)
    roundtrip = slot.astimezone(timezone.utc).astimezone(zone)
    if roundtrip.replace(tzinfo=None) != wall:  # in the gap
        slot = roundtrip
    return slot


def from_pipeline(pipeline, *, cron: str | None = None, tz: str | None = None,
                  catchup: bool | None = None, max_active_runs: int | None = None,
                  start: datetime | None = None, after: list[str] | None = None,
                  sla: str | None = None, params: dict | None = None) -> Schedule:
    """The schedule of a loaded pipeline: its YAML ``schedule:`` overridden by options
    (``cron`` or ``after`` replaces the file's trigger). Slots from ``start`` on (default:
    now) are due; for ``after``, successes that end from then on count. Each run gets
    ``params``."""
    if pipeline.source is None:
        raise SpecError("only a pipeline file or folder can be scheduled (the scheduler loads "
                        "it again for every run)")
    declared = pipeline.schedule or {}
    if cron and after:
        raise SpecError("give --cron or --after, not both (a run started after another "
                        "pipeline takes that run's logical date; a cron slot is its own)")
    if not cron and not after:
        cron, after = declared.get("cron"), declared.get("after")
    upstream = read_after(after, "--after" if after else "schedule") if after else ()
    if cron is None and not upstream:
        raise SpecError(f"{pipeline.source}: no cron expression: give --cron \"0 6 * * *\" (or "
                        "--after PIPELINE) or add a schedule: {cron: ...} to the pipeline file")
    if sla is None and declared.get("sla") is not None:
        sla, sla_where = declared["sla"], "schedule"
    else:
        sla_where = "--sla"
    if sla is not None and cron is None:
        raise SpecError("an sla needs a cron schedule (it is measured from each slot; a "
                        "schedule with after: has no slots)")
    runs = declared.get("max_active_runs", 1) if max_active_runs is None else max_active_runs
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise SpecError(f"max_active_runs must be a whole number >= 1, not {runs!r}")
    return Schedule(
        pipeline=pipeline.name, source=str(Path(pipeline.source).resolve()),
        cron=check_cron(cron) if cron is not None else None, after=upstream,
        sla=read_sla(sla, sla_where) if sla is not None else None,
        timezone=check_timezone(tz or declared.get("timezone") or DEFAULT_TIMEZONE),
        catchup=bool(declared.get("catchup", False) if catchup is None else catchup),
        max_active_runs=runs, params=dict(params or {}),
        created_at=(start - timedelta(microseconds=1) if start else datetime.now(timezone.utc)
                    ).isoformat())
