"""The orchestrator's own cost per task, kernels left out: a pipeline of one task, a grid
of N instances of a trivial notebook after it, and one task that joins them, run with an
executor that ends every attempt as soon as it is given (no kernel, no notebook executed).
What is measured is what the run costs nborch's process per task: the engine and planner,
the events, the store, the Run, the listeners. Not part of the test suite.

    .venv/bin/python tests/benchmarks/engine_cost.py [--sizes 10,1000,10000] [--progress]
                                                     [--kernels] [--views]

Each size runs in a fresh process (``--one N``). ``--progress`` adds the listener that
``nborch run`` prints progress lines with when its output is not a terminal. ``--views`` also
times the views a user opens on the finished run, as commands (``nborch show``, ``show
--json``, ``runs``; wall seconds, a process each, imports included). ``--kernels``
runs the notebooks for real (the local executor, forked kernels, ``--max-parallel 4``):
then the orchestrator's CPU also holds what papermill and nbclient do for each attempt in
its threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def instant_executor():
    """An executor that ends each attempt with success the moment it is submitted."""
    from nborch.core.clock import utcnow
    from nborch.execution.attempt import AttemptResult
    from nborch.execution.executors import Executor

    class Instant(Executor):
        name = "instant"

        def submit(self, job, request, emit, done):
            now = utcnow()
            done(AttemptResult("success", now, now, None, {}))
            return self

        def cancel(self) -> None:
            pass

    return Instant()


def write_pipeline(root: Path, n: int) -> Path:
    import nbformat
    import yaml
    for name, params in (("first", "x = 1"), ("one", "i = 0"), ("join", "x = 1")):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        cell = nbformat.v4.new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell]
        nbformat.write(nb, str(root / f"{name}.ipynb"))
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": f"grid{n}", "tasks": {
        "first": {"notebook": "first.ipynb"},
        "one": {"notebook": "one.ipynb", "upstream": ["first"], "grid": {"i": list(range(n))}},
        "join": {"notebook": "join.ipynb", "upstream": ["one"]}}}))
    return path


def views(home: Path, run_id: str) -> dict:
    """Wall seconds of each view command on the run, and the bytes it printed."""
    out = {}
    env = {**os.environ, "NBORCH_HOME": str(home)}
    for label, args in (("show", ["show", run_id]), ("show --json", ["show", run_id, "--json"]),
                        ("runs", ["runs"])):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nborch", *args], env=env,
                              capture_output=True, check=True)
        out[label] = (time.perf_counter() - start, len(done.stdout))
    return out


def one(n: int, progress: bool, kernels: bool = False, timed_views: bool = False) -> dict:
    from nborch.runtime.api import Pipeline
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipeline = Pipeline.load(str(write_pipeline(root, n)), allow_large_grid=True)
        listeners = []
        if progress:
            from nborch.ui.console import PlainProgress
            listeners.append(PlainProgress(open(os.devnull, "w")))
        cpu0 = time.process_time()
        handle = pipeline.start(max_parallel=4, home=str(root / ".nborch"),
                                executor=None if kernels else instant_executor(),
                                listeners=listeners)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        run = handle.wait()
        cpu2, wall2 = time.process_time(), time.perf_counter()
        assert run.status == "success", run.status
        seen = views(root / ".nborch", run.run_id) if timed_views else {}
    tasks = n + 2
    return {"tasks": tasks, "check_cpu": cpu1 - cpu0,
            "cpu_per_task_ms": (cpu2 - cpu1) / tasks * 1000, "wall": wall2 - wall1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load": os.getloadavg()[0], "views": seen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--kernels", action="store_true")
    parser.add_argument("--views", action="store_true")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.progress, args.kernels, args.views)))
        return 0
    print("| grid instances | tasks | checking (CPU) | run: orchestrator CPU per task | run wall | "
          "peak RSS | load average at the end |\n|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n)]
                             + (["--progress"] if args.progress else [])
                             + (["--kernels"] if args.kernels else [])
                             + (["--views"] if args.views else []),
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.splitlines()[-1])
        print(f"| {n:,} | {r['tasks']:,} | {r['check_cpu']:.2f} s | "
              f"{r['cpu_per_task_ms']:.2f} ms | {r['wall']:.1f} s | {r['peak_rss_mb']:.0f} MB | "
              f"{r['load']:.1f} |", flush=True)
        for label, (seconds, size) in r["views"].items():
            print(f"|   `nborch {label}` | | | {seconds:.2f} s | {size:,} bytes | | |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
