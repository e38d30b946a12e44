"""Run one system on one scenario in this (fresh) process and print a JSON measurement.

    python systems.py SYSTEM FOLDER PARALLEL WORKDIR

``wall`` is timed around the work only, after imports, for the in-process systems (that is
how a library user meets them) and around whole commands for the command-line ones.
``cpu`` is this orchestrating process's own CPU time (kernels are other processes).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path


def _edges(folder: Path) -> dict[str, list[str]]:
    import ast

    import nbformat
    edges = {}
    for path in sorted(folder.glob("*.ipynb")):
        cell = nbformat.read(path, as_version=4).cells[0].source
        edges[path.stem] = ast.literal_eval(cell.splitlines()[0].split("=", 1)[1].strip())
    from graphlib import TopologicalSorter
    order = list(TopologicalSorter(edges).static_order())
    return {t: edges[t] for t in order}


def nborch_api(folder: Path, parallel: int, work: Path):
    import nborch.execution.papermill_engine  # noqa: F401  (imports papermill, as the baselines do)
    from nborch import Pipeline
    pipeline = Pipeline.load(folder)
    start = time.perf_counter()
    run = pipeline.run(max_parallel=parallel, home=work / ".nborch")
    assert run.status == "success", run.to_dict()
    return time.perf_counter() - start


def nborch_not_forked(folder: Path, parallel: int, work: Path):
    """nborch starting every kernel from scratch instead of forking it from its template."""
    os.environ["NBORCH_FORK_KERNELS"] = "0"
    return nborch_api(folder, parallel, work)


def nborch_no_progress(folder: Path, parallel: int, work: Path):
    """nborch with its per-cell progress hooks removed: what progress events cost."""
    import nborch.execution.papermill_engine as engine
    init = engine.NborchClient.__init__

    def without_hooks(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.on_cell_execute = self.on_cell_executed = None

    engine.NborchClient.__init__ = without_hooks
    return nborch_api(folder, parallel, work)


def _nborch_dask(runs_before: int):
    """The same run on a Dask LocalCluster with the same parallelism (worker processes, at
    most one per CPU, whose threads add up to ``parallel``), started outside the timing: a
    cluster's start is paid once, not per run; its workers import papermill before the
    timing too, as the in-process systems do. ``runs_before``: runs of the same pipeline on
    that cluster before the one timed (1: a cluster that served runs already, its workers'
    kernel templates up)."""
    def run(folder: Path, parallel: int, work: Path):
        import distributed

        import nborch.execution.papermill_engine  # noqa: F401
        from nborch import Pipeline
        workers = max(1, min(parallel, os.cpu_count() or 1))
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=-(-parallel // workers),
                                      processes=True, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.run(_import_papermill)
            pipeline = Pipeline.load(folder)
            for _ in range(runs_before + 1):
                start = time.perf_counter()
                run = pipeline.run(max_parallel=parallel, home=work / ".nborch", executor=client)
                wall = time.perf_counter() - start
                assert run.status == "success", run.to_dict()
        return wall
    return run


def _import_papermill() -> None:
    import nborch.execution.papermill_engine  # noqa: F401


COMMAND_PARALLEL = 4  # `nborch run --max-parallel 4`, as the performance targets say


def _nborch_command(kernelspec: bool):
    """The ``nborch`` command as a user types it (the console script of this virtualenv),
    timed from its launch to its exit, imports included. With ``kernelspec``, the kernel
    ``python3`` is the one ``python -m ipykernel install`` writes (``--prefix`` here, found
    through JUPYTER_PATH; ``--sys-prefix`` and ``--user`` write the same file elsewhere):
    ``.../bin/python -Xfrozen_modules=off -m ipykernel_launcher``; without, the one pip
    installs with ipykernel (``python -m ipykernel_launcher``). Also records when the run
    was recorded as started (imports, loading and validation done), when its first task
    started and ended, in seconds from the launch."""
    def run(folder: Path, parallel: int, work: Path):
        env = dict(os.environ)
        if kernelspec:
            prefix = work / "kernelspec"
            subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix",
                            str(prefix)], check=True, capture_output=True)
            env["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
        nborch = Path(sys.executable).with_name("nborch")
        launched = time.time()
        start = time.perf_counter()
        out = subprocess.run([str(nborch), "--home", str(work / ".nborch"), "run", str(folder),
                              "--max-parallel", str(COMMAND_PARALLEL), "--json", "-v"],
                             check=True, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        from datetime import datetime
        doc = json.loads(out.stdout)
        at = lambda text: datetime.fromisoformat(text).timestamp() - launched  # noqa: E731
        first = min(doc["tasks"].values(), key=lambda t: t["started_at"])
        forked = [line for line in out.stderr.splitlines() if "kernels 'python3'" in line]
        return wall, {"run_started": at(doc["started_at"]),
                      "first_started": at(first["started_at"]),
                      "first_ended": at(first["ended_at"]), "kernels": forked[:1]}
    return run


def papermill_seq(folder: Path, parallel: int, work: Path):
    import papermill as pm
    edges = _edges(folder)
    start = time.perf_counter()
    for task in edges:
        pm.execute_notebook(str(folder / f"{task}.ipynb"), str(work / f"{task}.ipynb"),
                            progress_bar=False)
    return time.perf_counter() - start


def papermill_seq_nosave(folder: Path, parallel: int, work: Path):
    """papermill's API writing the output notebook once at the end, not after every cell:
    the baseline for what per-cell progress costs nborch."""
    import papermill as pm
    edges = _edges(folder)
    start = time.perf_counter()
    for task in edges:
        pm.execute_notebook(str(folder / f"{task}.ipynb"), str(work / f"{task}.ipynb"),
                            progress_bar=False, request_save_on_cell_execute=False)
    return time.perf_counter() - start


def papermill_threads(folder: Path, parallel: int, work: Path):
    """A small DAG runner: papermill's API in ``parallel`` threads as dependencies allow."""
    import papermill as pm
    edges = _edges(folder)
    start = time.perf_counter()
    done: set[str] = set()
    running: dict = {}
    with ThreadPoolExecutor(parallel) as pool:
        while len(done) < len(edges):
            for task, ups in edges.items():
                if task not in done and task not in running.values() and \
                        len(running) < parallel and all(u in done for u in ups):
                    future = pool.submit(pm.execute_notebook, str(folder / f"{task}.ipynb"),
                                         str(work / f"{task}.ipynb"), progress_bar=False)
                    running[future] = task
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()
                done.add(running.pop(future))
    return time.perf_counter() - start


def papermill_cli(folder: Path, parallel: int, work: Path):
    papermill = Path(sys.executable).with_name("papermill")
    start = time.perf_counter()
    for task in _edges(folder):
        subprocess.run([str(papermill), "--no-progress-bar", str(folder / f"{task}.ipynb"),
                        str(work / f"{task}.ipynb")], check=True, capture_output=True)
    return time.perf_counter() - start


def _ploomber(executor: str):
    def run(folder: Path, parallel: int, work: Path):
        ploomber = Path(os.environ["NBORCH_BENCH_PLOOMBER"]) / "bin" / "ploomber"
        spec = folder.parent / f"{folder.name}-ploomber" / f"pipeline.{executor}.yaml"
        env = {**os.environ, "PLOOMBER_STATS_ENABLED": "false"}
        start = time.perf_counter()
        subprocess.run([str(ploomber), "build", "--entry-point", str(spec), "--force"],
                       cwd=spec.parent, check=True, capture_output=True, env=env)
        return time.perf_counter() - start
    return run


SYSTEMS = {
    "nborch": nborch_api,
    "nborch run": _nborch_command(kernelspec=False),
    "nborch run, ipykernel install": _nborch_command(kernelspec=True),
    "nborch, kernels not forked": nborch_not_forked,
    "nborch (dask executor)": _nborch_dask(runs_before=0),
    "nborch (dask executor, second run)": _nborch_dask(runs_before=1),
    "nborch, progress hooks off": nborch_no_progress,
    "papermill API, sequential": papermill_seq,
    "papermill API, threads": papermill_threads,
    "papermill API, one save": papermill_seq_nosave,
    "papermill CLI, per notebook": papermill_cli,
    "ploomber build (serial)": _ploomber("serial"),
    "ploomber build (parallel)": _ploomber("parallel"),
}


if __name__ == "__main__":  # (a guard Dask's worker processes need)
    system, folder = sys.argv[1], Path(sys.argv[2])
    parallel, work = int(sys.argv[3]), Path(sys.argv[4])
    work.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    wall = SYSTEMS[system](folder, parallel, work)
    wall, extra = wall if isinstance(wall, tuple) else (wall, {})
    print(json.dumps({"wall": wall, "cpu": time.process_time() - cpu0,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **extra}))
