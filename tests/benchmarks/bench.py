"""nborch's benchmark suite: whole runs of synthetic notebook DAGs against papermill and
Ploomber, measured in the same process run. Not part of the test suite.

    .venv/bin/python tests/benchmarks/bench.py [--reps 3] [--only chain10,fan16]
                                               [--ploomber VENV] [--out results.md]
                                               [--skip "papermill CLI,dask"]

Each measurement runs in a fresh subprocess (systems.py); repetitions are interleaved
across systems so that a busy moment of the machine does not favour one of them. Ploomber
is measured when ``--ploomber`` (or $NBORCH_BENCH_PLOOMBER) names a virtualenv that has
it: it pins old Jupyter packages, so it never shares nborch's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scenarios  # noqa: E402

PM_SEQ, PM_THREADS, PM_CLI = ("papermill API, sequential", "papermill API, threads",
                              "papermill CLI, per notebook")
PL_SERIAL, PL_PARALLEL = "ploomber build (serial)", "ploomber build (parallel)"
NOT_FORKED = "nborch, kernels not forked"
COMMAND, INSTALLED = "nborch run", "nborch run, ipykernel install"  # the command, imports included
# the same run on a LocalCluster of the same parallelism, started outside the timing
DASK, DASK_AGAIN = "nborch (dask executor)", "nborch (dask executor, second run)"
COMMANDS = (COMMAND, INSTALLED, PM_CLI, PL_SERIAL, PL_PARALLEL)  # timed as whole processes
PLAN = {  # scenario -> systems measured (nborch first)
    "chain10": ["nborch", INSTALLED, COMMAND, NOT_FORKED, DASK, DASK_AGAIN, PM_SEQ, PM_CLI,
                PL_SERIAL, PL_PARALLEL],
    "fan16": ["nborch", INSTALLED, COMMAND, NOT_FORKED, DASK, DASK_AGAIN, PM_SEQ, PM_THREADS,
              PL_PARALLEL],
    "dag50": ["nborch", INSTALLED, COMMAND, NOT_FORKED, PM_SEQ, PM_THREADS, PL_SERIAL,
              PL_PARALLEL],
    "imports": ["nborch", PM_SEQ, PM_CLI],
    # papermill's API saves after every cell by default: over 15 min here, so the baseline
    # is papermill saving once at the end
    "cells2000": ["nborch", "nborch, progress hooks off", "papermill API, one save"],
    "run200": ["nborch"],
}


def build(name: str, root: Path) -> scenarios.Scenario:
    return {"chain10": lambda: scenarios.chain(root), "fan16": lambda: scenarios.fan(root),
            "dag50": lambda: scenarios.layered(root), "imports": lambda: scenarios.imports(root),
            "cells2000": lambda: scenarios.cells(root),
            "run200": lambda: scenarios.wide(root, 200, "run200")}[name]()


def measure(system: str, scenario: scenarios.Scenario, work: Path) -> dict:
    parallel = scenario.parallel if system not in (PM_SEQ, PM_CLI, PL_SERIAL,
                                                   "papermill API, one save") else 1
    out = subprocess.run([sys.executable, str(HERE / "systems.py"), system, str(scenario.folder),
                          str(parallel), str(work)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{system} on {scenario.name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def kernel_start_cpu(samples: int = 5) -> float:
    """CPU seconds a kernel burns to start and run ``1`` (the floor of parallel runs)."""
    import psutil
    from jupyter_client.manager import start_new_kernel
    costs = []
    for _ in range(samples):
        km, kc = start_new_kernel(kernel_name="python3")
        kc.execute_interactive("1", timeout=30, output_hook=lambda msg: None)
        times = psutil.Process(km.provisioner.pid).cpu_times()
        costs.append(times.user + times.system)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return statistics.median(costs)


def forked_kernel_cpu(samples: int = 5) -> float:
    """The same as ``kernel_start_cpu`` for a kernel forked from nborch's template."""
    import psutil
    from jupyter_core.utils import run_sync

    from nborch.execution.forking import KernelForker
    from nborch.execution.kernels import Kernel, KernelRequest
    template = KernelForker()
    costs = []
    try:
        for _ in range(samples):
            kernel = Kernel(KernelRequest("python3", os.getcwd(), {}), template)
            kernel.start()
            kernel.kc.execute("1")
            while run_sync(kernel.kc.get_shell_msg)(timeout=30)["msg_type"] != "execute_reply":
                pass
            times = psutil.Process(kernel.pid).cpu_times()
            costs.append(times.user + times.system)
            kernel.shutdown()
    finally:
        template.close()
    return statistics.median(costs)


def big_dag(root: Path, reps: int) -> list[str]:
    from nborch import Pipeline
    from nborch.core.planner import Planner
    from nborch.spec.validate import prepare
    from nborch.ui import graph
    scenario = scenarios.wide(root, 500, "big500")
    rows = []
    for label, step in (("validate (load, notebooks, parameters, graph)", "validate"),
                        ("plan (state machine, ready and soon-ready sets)", "plan"),
                        ("lay out the graph (Graphviz dot, SVG)", "layout")):
        times = []
        for _ in range(reps):
            pipeline = Pipeline.load(scenario.folder)
            from nborch.spec import notebooks
            notebooks._inspect.cache_clear()
            start = time.perf_counter()
            prepared = prepare(pipeline)
            if step == "validate":
                times.append(time.perf_counter() - start)
                continue
            start = time.perf_counter()
            if step == "plan":
                planner = Planner({n: p.task for n, p in prepared.tasks.items()})
                planner.advance(0.0)
                planner.queued()
                list(planner.soon_ready())
            else:
                graph.render_svg(prepared.edges)
            times.append(time.perf_counter() - start)
        rows.append(f"| 500-task DAG: {label} | {statistics.median(times):.3f} s |")
    return rows


def table(scenario: scenarios.Scenario, results: dict[str, list[dict]]) -> list[str]:
    lines = [f"### {scenario.name}: {scenario.description}", "",
             "| system | median wall | min–max | nborch ÷ system | orchestrator CPU | peak RSS |",
             "|---|---|---|---|---|---|"]
    ours = statistics.median(r["wall"] for r in results["nborch"])
    for system, runs in results.items():
        walls = [r["wall"] for r in runs]
        median = statistics.median(walls)
        ratio = "—" if system == "nborch" else f"{ours / median:.2f}"
        cpu = f"{statistics.median(r['cpu'] for r in runs):.2f} s" \
            if system not in COMMANDS else "—"
        rss = f"{max(r['maxrss_mb'] for r in runs):.0f} MB" \
            if system not in COMMANDS else "—"
        lines.append(f"| {system} | {median:.2f} s | {min(walls):.2f}–{max(walls):.2f} s | "
                     f"{ratio} | {cpu} | {rss} |")
    overhead = (ours - scenario.ideal) / scenario.critical_path
    cpu = statistics.median(r["cpu"] for r in results["nborch"]) / len(scenario.edges)
    lines += ["", f"nborch per-task overhead on the critical path ((wall − ideal) / "
              f"{scenario.critical_path} tasks): **{overhead * 1000:.0f} ms**; orchestrator CPU "
              f"per task: {cpu * 1000:.0f} ms.", ""]
    return lines + command_lines(scenario, results)


def command_lines(scenario: scenarios.Scenario, results: dict[str, list[dict]]) -> list[str]:
    """The ``nborch run`` command against the papermill baseline of the targets, and where
    its time goes before the first task (medians, seconds from the command's launch)."""
    baseline = PM_SEQ if scenario.name == "chain10" else PM_THREADS
    lines = []
    for system in (INSTALLED, COMMAND):
        runs = results.get(system)
        if not runs:
            continue
        wall = statistics.median(r["wall"] for r in runs)
        ratio = ""
        if results.get(baseline):
            ratio = f"{wall / statistics.median(r['wall'] for r in results[baseline]):.2f} × " \
                    f"{baseline}; "
        phases = ", ".join(
            f"{label} {statistics.median(r[key] for r in runs):.2f} s" for label, key in (
                ("run recorded as started", "run_started"),
                ("first task started", "first_started"), ("first task ended", "first_ended")))
        kernels = runs[0]["kernels"][0].removeprefix("nborch: ") if runs[0]["kernels"] else "?"
        lines.append(f"- `{system}` (--max-parallel 4): {wall:.2f} s, {ratio}{phases}; {kernels}")
    return lines + ([""] if lines else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join([*PLAN, "big"]))
    parser.add_argument("--ploomber", default=os.environ.get("NBORCH_BENCH_PLOOMBER"),
                        metavar="VENV", help="a virtualenv with ploomber installed")
    parser.add_argument("--out", default=None, help="also write the markdown here")
    parser.add_argument("--skip", default="", metavar="SYSTEM,...",
                        help="leave out the systems whose names contain one of these")
    args = parser.parse_args()
    wanted = args.only.split(",")
    if args.ploomber:
        os.environ["NBORCH_BENCH_PLOOMBER"] = args.ploomber
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}; medians of "
             f"{args.reps}.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        floor_cpu = kernel_start_cpu()
        forked_cpu = forked_kernel_cpu()
        lines.append(f"One kernel start (start, run `1`, as CPU of the kernel process): "
                     f"{floor_cpu:.2f} CPU-s started from scratch, {forked_cpu:.2f} CPU-s "
                     "forked from nborch's kernel template.")
        lines.append("")
        for name in PLAN:
            if name not in wanted:
                continue
            scenario = build(name, root)
            skip = [word for word in args.skip.split(",") if word]
            systems = [s for s in PLAN[name] if ("ploomber" not in s or args.ploomber)
                       and (s == "nborch" or not any(word in s for word in skip))]
            results: dict[str, list[dict]] = {s: [] for s in systems}
            failed: dict[str, int] = dict.fromkeys(systems, 0)
            for rep in range(args.reps):
                for system in systems:
                    work = root / "work" / f"{name}-{system.replace(' ', '_')}-{rep}"
                    try:
                        results[system].append(measure(system, scenario, work))
                    except RuntimeError as exc:  # a baseline's own failure must not end the run
                        failed[system] += 1
                        print(f"{name:10} {system:28} failed: {exc}", file=sys.stderr, flush=True)
                        continue
                    print(f"{name:10} {system:28} {results[system][-1]['wall']:7.2f} s",
                          file=sys.stderr, flush=True)
            if not results["nborch"]:
                raise SystemExit(f"nborch failed every repetition of {name}")
            lines += table(scenario, {s: r for s, r in results.items() if r})
            lines += [f"{system}: {count} of {args.reps} repetitions failed (see the log)."
                      for system, count in failed.items() if count] + [""]
            if name == "fan16":
                cpus = os.cpu_count() or 1
                floor = (len(scenario.edges) * floor_cpu) / cpus + scenario.ideal
                forked = (len(scenario.edges) * forked_cpu) / cpus + scenario.ideal
                lines += [f"Floor for fan16 (18 kernel starts on {cpus} CPUs + 0.5 s): "
                          f"{floor:.2f} s with kernels started from scratch, {forked:.2f} s "
                          "with forked ones.", ""]
        if "big" in wanted:
            lines += ["### big: planning a 500-task DAG (no execution)", "",
                      "| step | median |", "|---|---|", *big_dag(root, args.reps), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
