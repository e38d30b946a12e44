"""What every ``nborch`` command shares: exit codes, printing, the store, metrics."""

from __future__ import annotations

import sys

from ..core.errors import NborchError, SpecError

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


def printable(text: str) -> str:
    """User text as the CLI prints it: see ``console.printable`` (imported when needed, as
    every view is, so ``nborch publish`` starts fast)."""
    from .console import printable
    return printable(text)


def rich_console():
    from rich.console import Console
    # Piped output is read by people in logs and CI, not by an 80-column terminal.
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)


def open_store(args, readonly: bool = False):
    """The run store; ``readonly`` for commands that only read: they work on a read-only
    copy of the home or a full disk, and never wait for a writer."""
    from ..store.store import Store
    return Store(args.home, readonly=readonly)


def resolve_run_id(store, run_id: str) -> str:
    if run_id in ("latest", "last"):
        rows = store.list_runs(limit=1)
        if not rows:
            raise NborchError("no runs recorded yet")
        return rows[0]["run_id"]
    return run_id


def duration_arg(text: str, option: str) -> float:
    """Seconds in an option's duration (``30d``, ``5m``); a bad one is exit 2, saying how."""
    from ..core.clock import parse_duration
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise SpecError(f"{option}: {exc}") from None


def older_than_arg(text: str, option: str) -> float:
    """Seconds in a duration counted back from now (``--older-than 30d``); one reaching back
    before the calendar's year 1 is exit 2 too."""
    from datetime import datetime, timedelta, timezone
    seconds = duration_arg(text, option)
    try:
        datetime.now(timezone.utc) - timedelta(seconds=seconds)
    except OverflowError:
        raise SpecError(f"{option}: {text!r} reaches back before the year 1; give a shorter "
                        "duration (30d, 12h)") from None
    return seconds


def serve_metrics(args, say):
    """The metrics listener, serving already, when ``--metrics-port`` is given; else None.
    It reads the store (read-only) at each scrape for the pipelines' last successes."""
    if args.metrics_port is None:
        return None
    from ..runtime.metrics import Metrics
    metrics = Metrics(open_store(args, readonly=True)).serve(args.metrics_port,
                                                              args.metrics_host)
    say(f"serving metrics on http://{args.metrics_host}:{metrics.port}/metrics")
    return metrics


def with_param(p, which: str = "") -> None:
    """``-p KEY=VALUE``, repeatable (``spec.yamltext.parse_params`` reads them)."""
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help=f"set a pipeline parameter{' ' + which if which else ''}; value read "
                        "as YAML (4, true, eu)")


def with_metrics(p) -> None:
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on PORT at /metrics (needs nborch[metrics])")
    p.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST",
                   help="address to serve metrics on (default 0.0.0.0: every interface)")


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (systemd stopping a unit, a closed terminal): the run is cancelled
    as Ctrl-C cancels it, and the exit code says which signal (128 + its number)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
