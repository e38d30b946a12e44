"""The recorded runs: ``nborch runs`` lists them, ``show`` shows one, ``gc`` deletes old
ones."""

from __future__ import annotations

import json
import sys

from ..core.errors import SpecError
from ..core.states import RUN_STATES
from .cli_common import EXIT_OK, older_than_arg, open_store, resolve_run_id, rich_console

RUNS_LIMIT = 50  # runs `nborch runs` lists unless told


def cmd_runs(args) -> int:
    from .console import print_runs
    store = open_store(args, readonly=True)
    since = _since(args.since)
    chosen = {"status": args.status, "since": since}
    rows = store.list_runs(args.pipeline, args.limit, **chosen)
    if args.json:
        last_success = store.last_successes()
        print(json.dumps([{**r, "pipeline_last_success_at": last_success.get(r["pipeline"])}
                          for r in rows], indent=2))
    elif not rows:
        which = [f"for pipeline {args.pipeline!r}" if args.pipeline else "",
                 f"{args.status}" if args.status else "", f"since {since}" if since else ""]
        print(" ".join(["no runs recorded yet", *filter(None, which)]))
    else:
        print_runs(rows, rich_console())
    if rows and len(rows) == args.limit and (total := store.count_runs(args.pipeline, **chosen)) \
            > len(rows):
        print(f"the {len(rows)} newest of {total} runs (--limit {args.limit}"
              f"{', the default' if args.limit == RUNS_LIMIT else ''})",
              file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def _since(text: str | None) -> str | None:
    """``--since``: an ISO date or time (UTC unless it says), or a duration ago (``7d``)."""
    if text is None:
        return None
    from datetime import datetime, timedelta, timezone

    from ..core.clock import parse_duration
    try:
        when = datetime.now(timezone.utc) - timedelta(seconds=parse_duration(text))
    except (ValueError, OverflowError):  # not a duration, or one reaching before year 1
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise SpecError(f"--since {text!r}: use an ISO date or time (2026-11-01, "
                            "2026-11-01T06:00) or a duration ago (7d, 12h)") from None
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()


def cmd_show(args) -> int:
    from .console import print_run
    store = open_store(args, readonly=True)
    run = store.get_run(resolve_run_id(store, args.run_id))
    if args.json:
        from ..core.grouping import groups
        data = run.to_dict()
        for name, attempts in _group(store.attempts(run.run_id)).items():
            data["tasks"][name]["attempt_history"] = attempts
        for grid, names in groups(run).items():
            for name in names:
                data["tasks"][name]["grid"] = grid
        print(json.dumps(data, indent=2))
    else:
        print_run(run, rich_console())
    return EXIT_OK


def _group(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["task"], []).append(
            {k: row[k] for k in ("attempt", "status", "started_at", "ended_at", "output_path",
                                 "error")})
    return out


def cmd_gc(args) -> int:
    """Delete the runs that ended more than ``--older-than`` ago, with their folders."""
    from datetime import datetime, timedelta, timezone

    from ..store.retention import collect
    older_than = older_than_arg(args.older_than, "--older-than")
    store = open_store(args)
    done = collect(store, datetime.now(timezone.utc) - timedelta(seconds=older_than),
                   keep_failed=args.keep_failed, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(done.to_dict(), indent=2))
    else:
        if args.dry_run:
            for run_id in done.run_ids:
                print(run_id)
        print(done.summary())
    return EXIT_OK


def add_parsers(sub) -> None:
    """Register ``runs``, ``show`` and ``gc`` on the ``nborch`` subcommand parser."""
    p = sub.add_parser("runs", help="list recorded runs, newest first")
    p.add_argument("--pipeline", default=None, metavar="NAME")
    p.add_argument("--status", default=None, choices=[str(s) for s in RUN_STATES],
                   help="only runs in this state")
    p.add_argument("--since", default=None, metavar="WHEN",
                   help="only runs started since WHEN: an ISO date or time, or a duration "
                        "ago (7d, 12h)")
    p.add_argument("--limit", type=int, default=RUNS_LIMIT,
                   help=f"at most this many, the newest (default {RUNS_LIMIT})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="one run: tasks, states, attempts, values, errors")
    p.add_argument("run_id", help="a run id, or 'latest'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("gc", help="delete old runs with their notebooks, logs and artifacts")
    p.add_argument("--older-than", required=True, metavar="DURATION",
                   help="delete runs that ended more than this long ago (30d, 12h); running "
                        "runs are never deleted")
    p.add_argument("--keep-failed", action="store_true",
                   help="keep failed and crashed runs, whatever their age")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs that would be deleted and the space freed; delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gc)
