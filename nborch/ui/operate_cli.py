"""Commands that operate on runs other processes started: ``nborch cancel``."""

from __future__ import annotations

import time

from ..core.states import State
from .cli_common import EXIT_FAILED, EXIT_OK, open_store, printable, resolve_run_id

POLL_SECONDS = 0.25


def cmd_cancel(args) -> int:
    """Ask the process running a run (the CLI, the scheduler, a notebook) to cancel it: it
    looks at each heartbeat (every 5 s), stops its kernels and commands and records the
    states; then wait for that, at most ``--timeout`` seconds."""
    store = open_store(args)
    store.mark_crashed()  # a run whose process is gone has ended: crashed
    run_id = resolve_run_id(store, args.run_id)
    status = store.request_cancel(run_id)
    if status != State.RUNNING:
        run = store.get_run(run_id)
        print(printable(f"run {run_id} already ended: {status}"
                        + (f" at {run.ended_at}" if run.ended_at else "")))
        return EXIT_FAILED
    print(f"run {run_id}: cancel requested", flush=True)
    if args.no_wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while (run := store.get_run(run_id)).status == State.RUNNING:
        if time.monotonic() >= deadline:
            print(f"run {run_id} is still running after {args.timeout:g}s; its process cancels "
                  "it at its next heartbeat if it is alive (`nborch show` tells)")
            return EXIT_FAILED
        time.sleep(POLL_SECONDS)
    if run.status != State.CANCELLED:
        print(f"run {run_id} ended {run.status} before the cancel reached it")
        return EXIT_FAILED
    counts = ", ".join(f"{n} {state}" for state, n in run.counts().items())
    print(f"run {run_id} cancelled ({counts})")
    return EXIT_OK


def add_parsers(sub) -> None:
    p = sub.add_parser("cancel", help="cancel a run started by any process on this store")
    p.add_argument("run_id", help="a run id, or 'latest'")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the run to stop (default 60)")
    p.add_argument("--no-wait", action="store_true", help="ask, and return at once")
    p.set_defaults(func=cmd_cancel)
