"""How big and how fast the task table of a 300-instance grid is.

Not a test: run it by hand, ``.venv/bin/python tests/benchmarks/bench_html.py [INSTANCES]``.
The live widget re-sends its task table and each grid's instance table on every update, so
both must stay small and render in a few milliseconds.
"""

from __future__ import annotations

import sys
import time

from nborch.core.grouping import groups
from nborch.core.run import Run, TaskRun
from nborch.ui import htmlview

STATES = ("success", "failed", "running", "pending")


def grid_run(n: int) -> Run:
    """An upstream task, a grid of ``n`` instances in mixed states, and a task after it."""
    start, end = "2026-01-01T00:00:05+00:00", "2026-01-01T00:00:35+00:00"
    tasks = {"extract": TaskRun("extract", status="success", attempts=1, started_at=start,
                                ended_at=end, output_path="/srv/project/out/extract.ipynb",
                                values={"rows": 1200})}
    for i in range(n):
        state = STATES[i % len(STATES)]
        t = TaskRun(f"region-{i}", status=state, upstream=("extract",), grid="region",
                    attempts=0 if state == "pending" else 1)
        if state != "pending":
            t.started_at = start
        if state in ("success", "failed"):
            t.ended_at, t.output_path = end, f"/srv/project/out/region-{i}.ipynb"
        if state == "success":
            t.values = {"total": i * 3.5, "label": f"region {i}"}
        if state == "running":
            t.progress = {"cell": 4, "cells": 12, "line": "df = load(region)"}
        tasks[t.name] = t
    tasks["report"] = TaskRun("report", upstream=tuple(f"region-{i}" for i in range(n)))
    return Run("r1", "bench", started_at=start, tasks=tasks)


def best_ms(fn, repeat: int) -> float:
    """The least CPU time of ``repeat`` calls: on a busy machine, wall-clock medians measure
    the neighbours."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1000


def main(n: int = 300, repeat: int = 200) -> None:
    run = grid_run(n)
    names = groups(run)["region"]
    cases = {
        "task_table (widget: grid as one row)": lambda: htmlview.task_table(run,
                                                                             expand_grids=False),
        "instance_table (widget's grid panel)": lambda: htmlview.instance_table(run, names),
        "task_table (snapshot: instances folded)": lambda: htmlview.task_table(run),
    }
    for label, fn in cases.items():
        fn()  # warm up (templates compiled once per process)

        def cold(fn=fn):  # as the first render of a run: nothing cached yet
            for cached in (htmlview.link, htmlview.state_badge):
                getattr(cached, "cache_clear", lambda: None)()
            return fn()

        print(f"{label}: {len(fn().encode()):,} bytes, {best_ms(fn, repeat):.2f} ms, "
              f"first render {best_ms(cold, repeat):.2f} ms (least CPU time of {repeat})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
