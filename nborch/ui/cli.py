"""The ``nborch`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from contextlib import nullcontext

from ..core.errors import NborchError, SpecError
from ..core.states import State
from ..core.version import __version__
from .cli_common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    Stopped,
    open_store,
    printable,
    resolve_run_id,
    rich_console,
    serve_metrics,
    with_metrics,
    with_param,
)


def cmd_run(args) -> int:
    from . import quickstart
    quickstart.start(args.executor)  # the kernel template first: it imports while this does
    from ..runtime.api import start_run
    from ..spec.loader import load
    from ..spec.yamltext import parse_params
    pipeline = load(args.pipeline, allow_large_grid=args.allow_large_grid)
    quickstart.loaded(pipeline, args.executor)
    return _follow(args, lambda listeners: start_run(
        pipeline, params=parse_params(args.param), max_parallel=args.max_parallel,
        fail_fast=args.fail_fast, logical_date=args.logical_date, home=args.home,
        listeners=listeners, incremental=args.incremental, force=args.force,
        executor=args.executor, output_dir=args.output_dir, run_timeout=args.run_timeout),
        f"of {pipeline.name} started "
        f"({len(pipeline.tasks)} tasks)")


def cmd_resume(args) -> int:
    from .quickstart import defer_rfc3987_syntax
    defer_rfc3987_syntax()
    from ..runtime.api import resume_run
    run_id = resolve_run_id(open_store(args, readonly=True), args.run_id)
    return _follow(args, lambda listeners: resume_run(
        run_id, from_task=args.from_task, max_parallel=args.max_parallel,
        fail_fast=args.fail_fast, home=args.home, listeners=listeners, executor=args.executor),
        "resumed")


def _follow(args, start, started_what: str) -> int:
    """Start a run with progress listeners, show it live, print the outcome."""
    from ..core.events import RunStarted
    from .console import LiveProgress, PlainProgress, print_run
    out = sys.stderr if args.json else sys.stdout
    live = out.isatty() and not args.json
    if args.verbose:
        _log_to_stderr()

    def announce(event) -> None:  # first, before any task's progress line
        if isinstance(event, RunStarted):
            print(f"run {event.run_id} {started_what}", file=out, flush=True)

    metrics = serve_metrics(args, lambda text: print(text, file=out, flush=True))
    with metrics or nullcontext():  # stops serving when the run ends
        handle = start([announce] + ([] if live else [PlainProgress(out)]) +
                       ([metrics] if metrics else []))
        try:
            if live:
                with LiveProgress(handle.run) as view:
                    handle.subscribe(view)
                    run = handle.wait()
            else:
                run = handle.wait()
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (``Stopped``)
            recorded = not handle.unrecorded  # else said below, with what the store lacks
            print("cancelled: kernels stopped" + (", states recorded" if recorded else ""),
                  file=sys.stderr)
            run, stopped = handle.run, exc
        else:
            stopped = None
    if args.json:
        print(json.dumps(run.to_dict(), indent=2))
    else:
        print_run(run, rich_console())
    unrecorded = handle.unrecorded if handle.done else None
    if unrecorded:  # the outcome above is the truth; the store holds less
        print(printable(f"nborch: error: {unrecorded}"), file=sys.stderr)
    if isinstance(stopped, Stopped):
        return 128 + stopped.signum
    if unrecorded:
        return EXIT_FAILED
    return {State.SUCCESS: EXIT_OK, State.CANCELLED: EXIT_CANCELLED}.get(run.status, EXIT_FAILED)


def _log_to_stderr() -> None:
    """``-v``: nborch's INFO messages (how kernels start, ...) on stderr, as it is when
    they come (the live view shows what is printed there above itself)."""
    import logging

    class ToStderr(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print(self.format(record), file=sys.stderr, flush=True)

    handler = ToStderr()
    handler.setFormatter(logging.Formatter("nborch: %(message)s"))
    logger = logging.getLogger("nborch")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)



def cmd_validate(args) -> int:
    from ..runtime.api import check
    from ..spec.loader import load
    from ..spec.yamltext import parse_params
    pipeline = load(args.pipeline, allow_large_grid=args.allow_large_grid)
    pools = open_store(args, readonly=True).known_pools(pipeline)
    prepared = check(pipeline, parse_params(args.param), pools=pools)
    grids = len(pipeline.grids)
    grids = f", {grids} grid{'s' if grids > 1 else ''}" if grids else ""
    print(printable(f"{args.pipeline}: pipeline {pipeline.name!r} is valid "
                    f"({len(prepared.tasks)} tasks{grids})"))
    return EXIT_OK


def cmd_plot(args) -> int:
    from ..spec.loader import load
    from ..spec.validate import prepare
    from . import graph
    prepared = prepare(load(args.pipeline))
    states = None
    if args.run:
        store = open_store(args, readonly=True)
        run = store.get_run(resolve_run_id(store, args.run))
        states = {n: t.status for n, t in run.tasks.items()}
    path = graph.write(prepared.edges, args.output, states)
    print(printable(f"wrote {path}"))
    return EXIT_OK


def cmd_logs(args) -> int:
    store = open_store(args, readonly=True)
    run = store.get_run(resolve_run_id(store, args.run_id))
    if args.task not in run.tasks:
        raise SpecError(f"run {run.run_id} has no task {args.task!r} "
                        f"(tasks: {', '.join(run.tasks)})")
    from .logs import follow_log, print_log
    if args.follow:
        follow_log(store, run.run_id, args.task, sys.stdout)
    elif not print_log(store, run.run_id, args.task, sys.stdout):
        print(f"task {args.task!r} has no log yet (status: {run.tasks[args.task].status})",
              file=sys.stderr)
    return EXIT_OK


def cmd_report(args) -> int:
    from .report import write_report
    store = open_store(args, readonly=True)
    run_id = resolve_run_id(store, args.run_id)
    path = write_report(store, run_id, args.output or f"run-{run_id}.html")
    print(printable(f"wrote {path}"))
    return EXIT_OK


def cmd_publish(args) -> int:
    from ..inside import publish
    try:
        value = json.loads(args.value)
    except ValueError:
        value = args.value  # not JSON: the text itself
    try:
        publish(args.name, value)
    except (TypeError, ValueError) as exc:  # too large
        print(f"nborch publish: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not os.environ.get("NBORCH_VALUES_FILE"):
        print(printable(f"nborch publish: not inside an nborch command task; {args.name} was not "
                        "recorded"), file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nborch", description="Run Jupyter notebooks as an orchestrated pipeline.")
    parser.add_argument("--version", action="version", version=f"nborch {__version__}")
    parser.add_argument("--home", default=None, metavar="DIR",
                        help="run store folder (default: $NBORCH_HOME or .nborch)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_params(p):
        with_param(p)
        p.add_argument("--allow-large-grid", action="store_true",
                       help="allow a grid of more than 10,000 instances")

    def with_run_options(p):
        p.add_argument("--max-parallel", type=int, default=None, metavar="N",
                       help="tasks running at once (default: number of CPUs; on Dask, "
                            "the cluster's worker threads)")
        p.add_argument("--fail-fast", action="store_true", help="cancel the rest when a task fails")
        p.add_argument("--executor", default=None, metavar="EXECUTOR",
                       help="where tasks run: local, dask (a local Dask cluster), dask://HOST:PORT "
                            "(a Dask scheduler); default: the file's executor:, else local")
        p.add_argument("--json", action="store_true", help="print the finished run as JSON")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="say more on stderr: whether each kernel is forked, and why not")
        with_metrics(p)

    p = sub.add_parser("run", help="run a pipeline")
    p.add_argument("pipeline", help="pipeline YAML file, or a folder of notebooks")
    with_params(p)
    with_run_options(p)
    p.add_argument("--logical-date", default=None, metavar="DATE",
                   help="the run's logical date (ISO; default: now)")
    p.add_argument("--incremental", action="store_true",
                   help="skip tasks whose notebook, parameters, kernel and upstream results are "
                        "unchanged since their last successful run")
    p.add_argument("--output-dir", default=None, metavar="DIR|URL",
                   help="where executed notebooks go (a folder, or an fsspec URL such as "
                        "s3://bucket/prefix); default: the store's runs/ folder")
    p.add_argument("--force", action="append", default=[], metavar="TASK",
                   help="with --incremental, run TASK (or every instance of grid TASK) even if "
                        "it is up to date (repeatable)")
    p.add_argument("--run-timeout", default=None, metavar="DURATION",
                   help="fail the run when it takes longer (2h, 90m, seconds); replaces the "
                        "pipeline's run_timeout")
    p.set_defaults(func=cmd_run, cancel_on_signals=True)

    p = sub.add_parser("resume", help="run again the tasks of a run that did not succeed")
    p.add_argument("run_id", help="a run id, or 'latest'")
    p.add_argument("--from", dest="from_task", default=None, metavar="TASK",
                   help="also run TASK and everything downstream of it again")
    with_run_options(p)
    p.set_defaults(func=cmd_resume, cancel_on_signals=True)

    p = sub.add_parser("validate", help="check a pipeline without running it")
    p.add_argument("pipeline")
    with_params(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plot", help="draw a pipeline's graph")
    p.add_argument("pipeline")
    p.add_argument("-o", "--output", default="dag.svg",
                   help="output file: .svg, .png, .pdf, .dot")
    p.add_argument("--run", default=None, metavar="RUN_ID",
                   help="colour the nodes by this run's states")
    p.set_defaults(func=cmd_plot)

    from . import operate_cli, pool_cli, records_cli, schedule_cli
    records_cli.add_parsers(sub)  # runs, show, gc

    p = sub.add_parser("logs", help="a task's output (stdout, stderr, text results)")
    p.add_argument("run_id", help="a run id, or 'latest'")
    p.add_argument("task")
    p.add_argument("-f", "--follow", action="store_true",
                   help="stream the output while the task runs; exit when it ends")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("report", help="write a self-contained HTML page about a run")
    p.add_argument("run_id", help="a run id, or 'latest'")
    p.add_argument("-o", "--output", default=None, metavar="FILE.html",
                   help="where to write it (default: run-RUN_ID.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("publish", help="inside a command task: publish a value for downstream "
                                        "tasks and the run record")
    p.add_argument("name")
    p.add_argument("value", help="read as JSON (42, true, [1, 2], {\"a\": 1}), else as text")
    p.set_defaults(func=cmd_publish)

    schedule_cli.add_parsers(sub)
    operate_cli.add_parsers(sub)
    pool_cli.add_parsers(sub)
    return parser


def _stop_on_signals() -> None:
    def stop(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second one stops at once
        raise Stopped(signum)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


class _ClosedPipeTolerant:
    """stdout that a reader closing early (``nborch runs | head``) silences rather than
    fails: what follows goes nowhere, and the command carries on to its real exit code."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.stdout = _ClosedPipeTolerant(sys.stdout)
    if getattr(args, "cancel_on_signals", False):
        _stop_on_signals()
    try:
        return args.func(args)
    except NborchError as exc:
        print(printable(f"nborch: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except Stopped as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return EXIT_CANCELLED


if __name__ == "__main__":
    raise SystemExit(main())
