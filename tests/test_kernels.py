"""Kernels started ahead of need: fresh per task, right cwd and env, none left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from conftest import forked_kernels, hanging_pipeline, kernel_templates, kernels_of, write_notebook

from nborch import Pipeline
from nborch.execution.attempt import AttemptJob
from nborch.execution.executors.local import LocalExecutor
from nborch.execution.kernels import KernelRequest


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
    assert kernel_templates() == []  # and the template they were forked from is gone too


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


def test_forked_kernels_are_like_started_ones(workdir: Path, monkeypatch):
    """A kernel forked from the template runs in the task's folder and environment, imports
    the task folder's modules, has its own random state, and is the template's child."""
    folder = workdir / "proj"
    (folder / "lib").mkdir(parents=True)
    (folder / "helper.py").write_text("VALUE = 'from the task folder'\n")
    (folder / "lib" / "extra_mod.py").write_text("VALUE = 'from PYTHONPATH'\n")
    body = ("import os, random, sys, nborch, helper, extra_mod\n"
            "nborch.publish('seen', [os.getcwd(), os.environ.get('FLAG'), helper.VALUE, "
            "extra_mod.VALUE, os.environ['NBORCH_TASK']])\n"
            "nborch.publish('random', random.random())\n"
            "nborch.publish('ppid', os.getppid())")
    for name in ("one", "two"):
        write_notebook(folder / f"{name}.ipynb", body)
    p = Pipeline("forked", root=folder)
    for name in ("one", "two"):
        p.notebook(f"{name}.ipynb", env={"FLAG": name, "PYTHONPATH": str(folder / "lib")})
    templates = []
    handle = p.start(max_parallel=2, listeners=[lambda e: templates.extend(
        t.pid for t in kernel_templates() if t.pid not in templates)])
    run = handle.wait(120)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    for name in ("one", "two"):
        assert run.values[name]["seen"] == [str(folder), name, "from the task folder",
                                            "from PYTHONPATH", name]
        assert run.values[name]["ppid"] in templates  # forked, not started from scratch
    assert run.values["one"]["random"] != run.values["two"]["random"]
    assert kernel_templates() == [] and forked_kernels() == []


def test_kernels_can_be_started_without_the_template(workdir: Path, monkeypatch):
    monkeypatch.setenv("NBORCH_FORK_KERNELS", "0")
    write_notebook(workdir / "plain.ipynb",
                   "import os, nborch\nnborch.publish('ppid', os.getppid())")
    p = Pipeline("plain", root=workdir)
    p.notebook("plain.ipynb")
    run = p.run()
    assert run.status == "success"
    assert run.values["plain"]["ppid"] == os.getpid()  # a child of this process itself


def test_a_killed_orchestrator_takes_its_forked_kernels_with_it(workdir: Path):
    """SIGKILL of `nborch run`: the template sees its stdin close and exits, and the
    kernels forked from it exit when their parent goes (ipykernel's parent poller)."""
    started = hanging_pipeline(workdir)
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", "pipeline.yaml"],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (started.exists() and len(forked_kernels()) >= 2):  # running + spare
        assert time.monotonic() < deadline and proc.poll() is None, "no forked kernels"
        time.sleep(0.05)
    left = forked_kernels() + kernel_templates()
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(left, timeout=20)
    assert not alive, f"still running after the orchestrator died: {alive}"
