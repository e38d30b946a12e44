"""What one run store sustains: P processes, each running R runs of a pipeline of T tasks
one after the other, all against one ``$NBORCH_HOME``, with an executor that ends every
attempt at once (no kernel: what is measured is the store and the engine). It reports the
runs and tasks recorded per second, the write transactions per run, the busiest moment's
wait for the store's lock, and the database's size per run. Not part of the test suite.

    .venv/bin/python tests/benchmarks/store_rate.py [--processes 1,4,8] [--runs 50] [--tasks 10]
                                                    [--history 300000]

``--history N`` times the commands people open on a store holding N runs over 30 days
(a month of 10,000 runs a day): 100 runs recorded for real, copied in SQL to N.

Used for docs/sizing.md: 10,000 runs a day is 0.12 runs a second on average, and a
morning's burst of them is what the store must keep up with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine_cost import instant_executor, write_pipeline


def runner(home: str, pipeline: str, runs: int) -> dict:
    """One process: ``runs`` runs in a row; its transactions and their waits for the lock."""
    from nborch.runtime.api import Pipeline
    from nborch.store.database import Database

    waits: list[float] = []
    transactions = 0
    write = Database._write

    def counted(self):  # time from asking for the write lock to holding it
        nonlocal transactions
        transactions += 1
        asked = time.perf_counter()
        manager = write(self)
        conn = manager.__enter__()
        waits.append(time.perf_counter() - asked)
        return _Entered(manager, conn)

    Database._write = counted
    p = Pipeline.load(pipeline)
    p.run(max_parallel=4, home=home, executor=instant_executor())  # imports done
    transactions, waits[:] = 0, []
    print("ready", flush=True)
    sys.stdin.readline()  # all processes start together
    start = time.perf_counter()
    for _ in range(runs):
        run = p.run(max_parallel=4, home=home, executor=instant_executor())
        assert run.status == "success", run.status
    return {"wall": time.perf_counter() - start, "transactions": transactions,
            "wait_p99": statistics.quantiles(waits, n=100)[98] if len(waits) > 1 else 0.0,
            "wait_max": max(waits, default=0.0)}


class _Entered:
    """The context manager ``Database._write`` returns, already entered."""

    def __init__(self, manager, conn):
        self.manager, self.conn = manager, conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc_info):
        return self.manager.__exit__(*exc_info)


def measure(processes: int, runs: int, tasks: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipeline = str(write_pipeline(root, tasks - 2))
        home = str(root / ".nborch")
        subprocess.run([sys.executable, "-m", "nborch", "runs"], check=True,
                       capture_output=True, env={**os.environ, "NBORCH_HOME": home})
        children = [subprocess.Popen([sys.executable, __file__, "--one", home, pipeline,
                                      str(runs)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
                    for _ in range(processes)]
        for child in children:
            assert child.stdout.readline() == "ready\n"
        start = time.perf_counter()
        results = [json.loads(child.communicate("go\n")[0].splitlines()[-1])
                   for child in children]
        wall = time.perf_counter() - start
        assert all(child.returncode == 0 for child in children)
        database = Path(home) / "nborch.db"
        import sqlite3
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            recorded = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        size = database.stat().st_size
    total = processes * runs
    assert recorded == total + processes, (recorded, total)
    return {"processes": processes, "runs": total, "tasks": tasks, "wall": wall,
            "runs_per_s": total / wall, "tasks_per_s": total * tasks / wall,
            "transactions_per_run": sum(r["transactions"] for r in results) / total,
            "wait_p99_ms": max(r["wait_p99"] for r in results) * 1000,
            "wait_max_ms": max(r["wait_max"] for r in results) * 1000,
            "bytes_per_run": size / (total + processes)}


HISTORY_VIEWS = (("runs", ["runs"]), ("runs --json", ["runs", "--json"]),
                 ("runs --since 1d", ["runs", "--since", "1d"]),
                 ("show RUN", ["show", "{run}"]), ("show RUN --json", ["show", "{run}", "--json"]),
                 ("gc --older-than 30d --dry-run", ["gc", "--older-than", "30d", "--dry-run"]),
                 ("scheduler status", ["scheduler", "status"]))


def history(n: int, tasks: int) -> None:
    """Wall seconds of each view command on a store of ``n`` runs spread over 30 days."""
    import sqlite3
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipeline = str(write_pipeline(root, tasks - 2))
        home = root / ".nborch"
        env = {**os.environ, "NBORCH_HOME": str(home)}
        seed = subprocess.Popen([sys.executable, __file__, "--one", str(home), pipeline, "99"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        seed.communicate("go\n")
        database = home / "nborch.db"
        with sqlite3.connect(database) as conn:
            run = conn.execute("SELECT run_id FROM runs ORDER BY started_at DESC").fetchone()[0]
            copies = n // 100
            minutes = 30 * 24 * 60 / copies
            for table in ("runs", "task_runs", "attempts"):
                columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
                moved = {"run_id": "run_id || '-' || k"}
                for column in ("started_at", "ended_at"):
                    if column in columns:
                        moved[column] = (f"strftime('%Y-%m-%dT%H:%M:%f', {column}, "
                                         f"'-' || (k * {minutes}) || ' minutes') || '+00:00'")
                values = ", ".join(moved.get(c, c) for c in columns)
                conn.execute(f"""WITH RECURSIVE copy(k) AS (SELECT 1 UNION ALL
                                 SELECT k + 1 FROM copy WHERE k < {copies - 1})
                                 INSERT INTO {table} ({", ".join(columns)})
                                 SELECT {values} FROM {table}, copy""")
            recorded = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        size = database.stat().st_size
        print(f"{recorded:,} runs of {tasks} tasks, the database {size / 2**20:.0f} MiB\n\n"
              "| command | wall | printed |\n|---|---|---|")
        for label, args in HISTORY_VIEWS:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "nborch",
                                   *(a.format(run=run) for a in args)],
                                  env=env, capture_output=True)
            took = time.perf_counter() - start
            assert done.returncode == 0, done.stderr
            print(f"| `nborch {label}` | {took:.2f} s | {len(done.stdout):,} bytes |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,4,8")
    parser.add_argument("--runs", type=int, default=50, help="runs per process")
    parser.add_argument("--tasks", type=int, default=10, help="tasks per run (at least 3)")
    parser.add_argument("--history", type=int, default=None)
    parser.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        home, pipeline, runs = args.one
        print(json.dumps(runner(home, pipeline, int(runs))))
        return 0
    if args.history is not None:
        history(args.history, args.tasks)
        return 0
    print("| processes | runs | tasks a run | wall | runs/s | tasks/s | write transactions a "
          "run | lock wait p99 | lock wait max | database per run |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for processes in (int(x) for x in args.processes.split(",")):
        r = measure(processes, args.runs, args.tasks)
        print(f"| {processes} | {r['runs']:,} | {r['tasks']} | {r['wall']:.1f} s | "
              f"{r['runs_per_s']:.1f} | {r['tasks_per_s']:.0f} | "
              f"{r['transactions_per_run']:.1f} | {r['wait_p99_ms']:.0f} ms | "
              f"{r['wait_max_ms']:.0f} ms | {r['bytes_per_run'] / 1024:.1f} KiB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
