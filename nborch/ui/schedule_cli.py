"""The scheduling commands of ``nborch``: ``schedule``, ``scheduler`` and ``backfill``."""

from __future__ import annotations

import json
import signal
from contextlib import nullcontext
from dataclasses import replace
from datetime import date, datetime, timezone

from ..core.errors import NborchError, SpecError
from ..core.states import State
from ..scheduling.after import check_new
from ..scheduling.schedules import Schedule, from_pipeline, registered
from .cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    duration_arg,
    older_than_arg,
    open_store,
    printable,
    serve_metrics,
    with_metrics,
    with_param,
)


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SpecError(f"{option} {text!r}: use a date such as 2026-01-31") from None


def _start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"--start {text!r}: use an ISO date or time such as 2026-01-31 or "
                        "2026-01-31T06:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def cmd_schedule_add(args) -> int:
    from ..spec.loader import load
    from ..spec.validate import merge_params
    from ..spec.yamltext import parse_params
    pipeline = load(args.pipeline)
    params = parse_params(args.param)
    merge_params(pipeline, params)  # an unknown name fails now, not at every slot
    schedule = from_pipeline(pipeline, cron=args.cron, tz=args.timezone,
                             catchup=True if args.catchup else None,
                             max_active_runs=args.max_active_runs, start=_start(args.start),
                             after=args.after, sla=args.sla, params=params)
    store = open_store(args)
    others = registered(store)
    check_new(schedule, others, store.known_pipelines())
    old = next((s for s in others if s.pipeline == schedule.pipeline), None)
    if old is not None and args.start is None:  # an update: it goes on where it was
        schedule = replace(schedule, last_slot=old.last_slot, created_at=old.created_at,
                           paused=old.paused, sla_checked=old.sla_checked)
    store.save_schedule(schedule)
    kept = "" if old is None or args.start else " (its progress kept; --start to reset it)"
    given = "".join(f", -p {k}={v}" for k, v in params.items())
    print(printable(f"{'updated' if old else 'added'} the schedule of {schedule.pipeline}"
                    f"{kept}: {_when(schedule)}{given}; `nborch scheduler` starts its runs"))
    return EXIT_OK


def _when(schedule: Schedule) -> str:
    """When a schedule's runs start, in words."""
    sla = f", sla {schedule.sla:g}s" if schedule.sla else ""
    if schedule.after:
        return f"after each success of {', '.join(schedule.after)}{sla}"
    return (f"{schedule.cron} ({schedule.timezone}), next run "
            f"{schedule.next_slot(datetime.now(timezone.utc)).isoformat()}{sla}")


def cmd_schedule_list(args) -> int:
    now = datetime.now(timezone.utc)
    rows = [{"pipeline": s.pipeline, "cron": s.cron, "timezone": s.timezone,
             "paused": s.paused, "next_run": None if s.paused or not s.cron
             else s.next_slot(now).isoformat(), "after": list(s.after), "sla": s.sla,
             "catchup": s.catchup, "max_active_runs": s.max_active_runs,
             "last_slot": s.last_slot, "source": s.source, "params": s.params}
            for s in registered(open_store(args, readonly=True))]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no schedules (add one with `nborch schedule add PIPELINE --cron \"0 6 * * *\"`)")
    else:
        width = max(len(r["pipeline"]) for r in rows)
        for r in rows:
            state = "paused" if r["paused"] else (
                f"next {r['next_run']}" if r["cron"] else "after a success")
            when = r["cron"] or f"after {', '.join(r['after'])}"
            print(f"{r['pipeline']:<{width}}  {when:<15} {r['timezone']:<16} {state}")
    return EXIT_OK


def _set_paused(args, paused: bool) -> int:
    if not open_store(args).update_schedule(args.pipeline, paused=paused):
        raise NborchError(f"no schedule for pipeline {args.pipeline!r} (see `nborch schedule "
                          "list`)")
    print(f"{'paused' if paused else 'resumed'} the schedule of {args.pipeline}")
    return EXIT_OK


def cmd_schedule_remove(args) -> int:
    if not open_store(args).remove_schedule(args.pipeline):
        raise NborchError(f"no schedule for pipeline {args.pipeline!r} (see `nborch schedule "
                          "list`)")
    print(f"removed the schedule of {args.pipeline} (its recorded runs are kept)")
    return EXIT_OK


def _stamped(text: str) -> str:
    """A line of the scheduler's output: its local time (ISO 8601, with the offset) first,
    as a journal read days later needs; its text names pipelines and quotes their errors."""
    return f"{datetime.now().astimezone().isoformat(timespec='seconds')} {printable(text)}"


def _log_stamped() -> None:
    """nborch's warnings (a hook that failed...) on stderr, stamped like the other lines."""
    import logging
    import sys

    class Stamped(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print(_stamped(self.format(record)), file=sys.stderr, flush=True)

    logging.getLogger("nborch").addHandler(Stamped(logging.WARNING))


def cmd_scheduler(args) -> int:
    from ..scheduling.scheduler import Scheduler

    def say(text: str) -> None:
        print(_stamped(text), flush=True)

    _log_stamped()
    # Bad durations are reported before the port is taken.
    grace = duration_arg(args.grace, "--grace")
    gc_older_than = None if args.gc_older_than is None else \
        older_than_arg(args.gc_older_than, "--gc-older-than")
    metrics = serve_metrics(args, say)
    with metrics or nullcontext():
        scheduler = Scheduler(args.home, grace=grace, say=say,
                              listeners=[metrics] if metrics else [],
                              gc_older_than=gc_older_than, executor=args.executor)
        for signum in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C stops it as SIGTERM does
            signal.signal(signum, lambda *_: scheduler.stop())
        scheduler.serve(wait_for_lock=args.wait)
    return EXIT_OK


def cmd_scheduler_status(args) -> int:
    from ..scheduling.status import lines, status
    report = status(open_store(args, readonly=True), datetime.now(timezone.utc))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(printable(line) for line in lines(report)))
    return EXIT_OK


def cmd_backfill(args) -> int:
    from ..scheduling.scheduler import backfill
    from ..spec.yamltext import parse_params
    runs = backfill(args.pipeline, _date(args.start, "--start"), _date(args.end, "--end"),
                    max_parallel_runs=args.max_parallel_runs, rerun=args.rerun, home=args.home,
                    say=lambda text: print(printable(text), flush=True),
                    params=parse_params(args.param), executor=args.executor)
    return EXIT_OK if all(r.status == State.SUCCESS for r in runs) else EXIT_FAILED


def with_executor(p) -> None:
    p.add_argument("--executor", default=None, metavar="EXECUTOR",
                   help="where the runs' tasks go: local, dask, dask://HOST:PORT (default: "
                        "each pipeline file's executor:, else local)")


def add_parsers(sub) -> None:
    """Register the scheduling commands on the ``nborch`` subcommand parser."""
    p = sub.add_parser("schedule", help="add, list, pause, resume or remove schedules")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="schedule a pipeline file (or folder) on cron")
    a.add_argument("pipeline", help="pipeline YAML file, or a folder of notebooks")
    a.add_argument("--cron", default=None, metavar="EXPR",
                   help="cron expression, e.g. \"0 6 * * *\" (default: the file's schedule:)")
    a.add_argument("--timezone", default=None, metavar="TZ",
                   help="IANA time zone of the cron times (default: the file's, else UTC)")
    a.add_argument("--catchup", action="store_true",
                   help="run every missed slot, not only the newest")
    a.add_argument("--max-active-runs", type=int, default=None, metavar="N",
                   help="runs of this pipeline at once, at most (default 1)")
    a.add_argument("--start", default=None, metavar="DATE",
                   help="slots from this date or time on are due (default: now)")
    a.add_argument("--after", action="append", default=None, metavar="PIPELINE",
                   help="run after each successful run of PIPELINE instead of on cron "
                        "(repeatable; default: the file's schedule: after)")
    a.add_argument("--sla", default=None, metavar="DURATION",
                   help="fire on_sla_miss when a slot has not succeeded this long after it, "
                        "e.g. 1h (default: the file's schedule: sla)")
    with_param(a, "for every run of the schedule (replaces those saved before)")
    a.set_defaults(func=cmd_schedule_add)
    a = actions.add_parser("list", help="schedules with their next run time")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_schedule_list)
    for action, func, what in (
            ("pause", lambda args: _set_paused(args, True), "start no runs until resumed"),
            ("resume", lambda args: _set_paused(args, False), "start runs again"),
            ("remove", cmd_schedule_remove, "forget the schedule (runs are kept)")):
        a = actions.add_parser(action, help=what)
        a.add_argument("pipeline", help="the pipeline's name")
        a.set_defaults(func=func)

    p = sub.add_parser("scheduler", help="run the scheduler: start due runs until stopped")
    p.add_argument("--grace", default="5m", metavar="DURATION",
                   help="on SIGTERM, how long running runs may go on before they are "
                        "cancelled (default 5m)")
    p.add_argument("--wait", action="store_true",
                   help="if another scheduler is active, wait and take over when it stops")
    p.add_argument("--gc-older-than", default=None, metavar="DURATION",
                   help="once a day, delete runs that ended more than DURATION ago (30d), as "
                        "`nborch gc --older-than` does")
    with_executor(p)
    with_metrics(p)
    p.set_defaults(func=cmd_scheduler)
    actions = p.add_subparsers(dest="scheduler_action", metavar="ACTION")
    a = actions.add_parser("status", help="whether a scheduler holds this store, its pid, "
                                          "since when, and what each schedule waits for")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_scheduler_status)

    p = sub.add_parser("backfill", help="run every slot of a pipeline's schedule in a date range")
    p.add_argument("pipeline", help="pipeline YAML file, or a folder of notebooks")
    p.add_argument("--start", required=True, metavar="DATE", help="first day (inclusive)")
    p.add_argument("--end", required=True, metavar="DATE", help="last day (inclusive)")
    p.add_argument("--max-parallel-runs", type=int, default=1, metavar="N")
    p.add_argument("--rerun", action="store_true", help="also run slots that already succeeded")
    with_param(p, "for every run (over the saved schedule's own -p)")
    with_executor(p)
    p.set_defaults(func=cmd_backfill, cancel_on_signals=True)
