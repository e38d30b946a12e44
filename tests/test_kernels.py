"""Kernels started ahead of need: fresh per task, right cwd and env, none left behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path


from nborch import Pipeline
from nborch.attempt import AttemptJob
from nborch.executors.local import LocalExecutor
from nborch.kernels import KernelRequest
from conftest import kernels_of, write_notebook



def test_every_task_gets_a_fresh_kernel_of_its_own(workdir: Path):
    for i in range(6):
        write_notebook(workdir / f"t{i}.ipynb",
                       "import os, nborch\nnborch.publish('pid', os.getpid())\n"
                       "nborch.publish('leak', 'secret_from_before' in globals())\n"
                       "secret_from_before = 1\nnborch.publish('task', os.environ['NBORCH_TASK'])")
    p = Pipeline("fresh")
    prev = None
    for i in range(6):  # a chain: later kernels are started while earlier tasks run
        prev = p.notebook(f"t{i}.ipynb", upstream=[prev] if prev else [])
    run = p.run(max_parallel=2)
    values = [run.values[f"t{i}"] for i in range(6)]
    assert len({v["pid"] for v in values}) == 6
    assert not any(v["leak"] for v in values)
    assert [v["task"] for v in values] == [f"t{i}" for i in range(6)]


def test_cancel_stops_running_and_spare_kernels(workdir: Path):
    started = workdir / "started"
    write_notebook(workdir / "slow.ipynb",
                   f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(120)")
    p = Pipeline("spares")
    prev = p.notebook("slow.ipynb")
    for i in range(3):
        write_notebook(workdir / f"next{i}.ipynb", "x = 1")
        prev = p.notebook(f"next{i}.ipynb", upstream=[prev])
    handle = p.start(max_parallel=2)
    deadline = time.monotonic() + 60
    while not (started.exists() and len(kernels_of(handle.run_id)) >= 2):
        assert time.monotonic() < deadline, "no spare kernel was started ahead of need"
        time.sleep(0.05)
    handle.cancel()
    run = handle.wait(timeout=60)
    assert run.status == "cancelled"
    assert kernels_of(run.run_id) == []  # shutdown waits for every kernel, spares included


def test_a_kernel_is_started_for_the_request_the_task_really_has(workdir: Path):
    write_notebook(workdir / "where.ipynb",
                   "import os, nborch\nnborch.publish('cwd', os.getcwd())\n"
                   "nborch.publish('flag', os.environ.get('FLAG'))")
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    executor = LocalExecutor()
    warm = KernelRequest("python3", str(workdir / "a"), {"FLAG": "warm"})
    executor.prewarm("where", 1, warm)
    real = KernelRequest("python3", str(workdir / "b"), {"FLAG": "real"})
    job = AttemptJob(run_id="r", task="where", attempt=1, notebook=str(workdir / "where.ipynb"),
                     parameters={}, kernel="python3", cwd=real.cwd,
                     output_path=str(workdir / "out" / "where.ipynb"),
                     log_path=str(workdir / "where.log"), env=real.env)
    results = []
    finished = threading.Event()
    executor.submit(job, real, lambda event: None,
                    lambda result: (results.append(result), finished.set()))
    assert finished.wait(60)
    executor.shutdown()
    assert results[0].status == "success", results[0].error
    assert results[0].values == {"cwd": str(workdir / "b"), "flag": "real"}
