"""Kernels started ahead of need: fresh per task, right cwd and env, none left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import forked_kernels, hanging_pipeline, kernel_templates, kernels_of, write_notebook
from hypothesis import given
from hypothesis import strategies as st

from nborch import Pipeline
from nborch.execution.attempt import AttemptJob
from nborch.execution.executors.local import LocalExecutor
from nborch.execution.kernels import ATTEMPT_VARIABLES, Kernel, KernelRequest


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


ENV_NAMES = st.sampled_from(["NBORCH_TASK", "NBORCH_ATTEMPT", "NBORCH_ARTIFACT_DIR",
                             "NBORCH_RUN_ID", "TOKEN", "PATH", "X"])


@given(st.dictionaries(ENV_NAMES, st.text()), st.dictionaries(ENV_NAMES, st.text()))
def test_requests_of_one_kind_differ_only_in_the_variables_naming_the_attempt(one, other):
    """A warm kernel is handed only to a request equal to its own but for the attempt's
    task, number and artifact folder: never across runs, secrets or environments."""
    a, b = KernelRequest("python3", "/w", one), KernelRequest("python3", "/w", other)
    outside = {k for k in one.keys() | other.keys() if k not in ATTEMPT_VARIABLES}
    assert a.same_kind(b) == all(one.get(k) == other.get(k) for k in outside)
    assert not a.same_kind(KernelRequest("python3", "/elsewhere", one))
    assert not a.same_kind(KernelRequest("python3", "/w", one, frozenset({"TOKEN"})))


def test_a_warm_kernel_takes_the_attempt_variables_of_the_request_it_serves(workdir: Path):
    """``adopt``: the kernel started for task ``a`` serves task ``b`` of the same run with
    ``b``'s variables (and a request of another kind is refused)."""
    from jupyter_core.utils import run_sync

    from nborch.execution.forking import KernelForker
    base = {"NBORCH_RUN_ID": "r1", "TOKEN": "t"}
    first = KernelRequest("python3", str(workdir), {**base, "NBORCH_TASK": "a",
                                                    "NBORCH_ATTEMPT": "1"})
    forker = KernelForker()
    kernel = Kernel(first, forker)
    try:
        kernel.start()
        assert kernel.forked
        with pytest.raises(ValueError):
            kernel.adopt(KernelRequest("python3", str(workdir), {**base, "TOKEN": "u"}))
        kernel.adopt(KernelRequest("python3", str(workdir), {**base, "NBORCH_TASK": "b"}))
        kernel.kc.execute("import os\nprint(os.environ.get('NBORCH_TASK'), "
                          "os.environ.get('NBORCH_ATTEMPT'), os.environ['TOKEN'])")
        text = ""
        while True:
            message = run_sync(kernel.kc.get_iopub_msg)(timeout=30)
            if message["msg_type"] == "stream":
                text += message["content"]["text"]
            if message["msg_type"] == "status" and \
                    message["content"]["execution_state"] == "idle" and text:
                break
        assert text.split() == ["b", "None", "t"]
    finally:
        kernel.shutdown()
        forker.close()
