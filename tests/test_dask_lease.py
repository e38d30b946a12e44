"""An attempt on a Dask cluster never outlives its run: when the orchestrating ``nborch run``
dies or stops, or the scheduler dies, the worker stops the kernel, and the late result is
written nowhere. Real processes: ``dask scheduler``, ``dask worker``, ``nborch run``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import nborch, run_json, write_notebook, write_pipeline
from dask_cluster import DaskProcesses, forked_on_workers

from nborch import Pipeline, Store


@pytest.fixture
def cluster(tmp_path_factory):
    processes = DaskProcesses(tmp_path_factory.mktemp("cluster"))
    processes.worker()
    yield processes
    processes.stop()


def hanging_pipeline(workdir: Path) -> tuple[Path, Path, Path]:
    """A task whose kernel writes its pid, then waits for a gate file; once through, it
    publishes a value: (pipeline file, pid file, gate)."""
    pid, gate = workdir / "kernel.pid", workdir / "gate"
    write_notebook(workdir / "hang.ipynb",
                   f"import os, time\nopen({str(pid) + '.tmp'!r}, 'w').write(str(os.getpid()))\n"
                   f"os.replace({str(pid) + '.tmp'!r}, {str(pid)!r})\n"
                   f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.1)",
                   "import nborch\nnborch.publish('late', 1)")
    path = write_pipeline(workdir, {"name": "hangs", "tasks": {"hang": {
        "notebook": "hang.ipynb"}}})
    return path, pid, gate


def add_hanging_command(path: Path, workdir: Path) -> tuple[Path, Path]:
    """The pipeline at ``path`` gets a command task that does the same: (pid file, gate)."""
    pid, gate = workdir / "command.pid", workdir / "gate"
    script = (f"import os, time\nopen({str(pid) + '.tmp'!r}, 'w').write(str(os.getpid()))\n"
              f"os.replace({str(pid) + '.tmp'!r}, {str(pid)!r})\n"
              f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.1)\nprint('through')")
    spec = yaml.safe_load(path.read_text())
    spec["tasks"]["wait"] = {"command": [sys.executable, "-c", script]}
    write_pipeline(workdir, spec)
    return pid, gate


def start_run(path: Path, cluster: DaskProcesses, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nborch", "run", str(path), "--executor",
                             f"dask://{cluster.address}"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def kernel_of(pid_file: Path) -> int:
    wait_for(lambda: pid_file.exists(), "the task's kernel never started")
    return int(pid_file.read_text())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def only_run(workdir: Path) -> str:
    [run] = Store(workdir / ".nborch").list_runs()
    return run["run_id"]


def assert_abandoned_and_nothing_late(workdir: Path, run_id: str, gate: Path,
                                      task: str = "hang") -> str:
    """The worker said why it stopped the attempt, and wrote no notebook, no "ok": even
    once the gate opens (a kernel still alive would now finish). Returns the log."""
    log = Store(workdir / ".nborch").log_path(run_id, task)
    wait_for(lambda: "AttemptAbandoned" in log.read_text(), "the worker never gave it up", 60)
    gate.touch()
    text = log.read_text()
    assert "ended" in text and ": ok ---" not in text and "through" not in text
    assert not (workdir / ".nborch" / "runs" / run_id / f"{task}.ipynb").exists()
    return text


def test_killing_the_orchestrator_stops_the_kernel_and_resume_runs_it_once(workdir: Path,
                                                                          cluster):
    cluster.worker()  # a thread for the notebook, one for the command
    path, pid_file, gate = hanging_pipeline(workdir)
    command_pid, _ = add_hanging_command(path, workdir)
    orchestrator = start_run(path, cluster, workdir)
    kernel, command = kernel_of(pid_file), kernel_of(command_pid)
    orchestrator.kill()  # kill -9: no cancel, no clean-up of its own
    orchestrator.wait()
    wait_for(lambda: gone(kernel) and gone(command), "the task outlived its run on the worker",
             60)
    # nor a kernel forked ahead for the run's next attempt (a warm one)
    wait_for(lambda: not forked_on_workers(cluster.client), "a warm kernel outlived its run", 60)
    run_id = only_run(workdir)
    for task in ("hang", "wait"):
        assert_abandoned_and_nothing_late(workdir, run_id, gate, task)
    crashed = Store(workdir / ".nborch").get_run(run_id)
    assert crashed.status == "crashed" and crashed.tasks["hang"].status != "success"
    pid_file.unlink()
    resumed = nborch("resume", run_id, "--executor", f"dask://{cluster.address}", "--json",
                     cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    done = run_json(resumed)
    assert done["status"] == "success" and done["tasks"]["hang"]["values"] == {"late": 1}
    for task in ("hang", "wait"):  # the resumed attempt's "ok", not the abandoned one's
        assert Store(workdir / ".nborch").log_path(run_id, task).read_text().count(
            ": ok ---") == 1
    # The killed run's event topic went with the resumed run's: the scheduler keeps none.
    left = [topic for topic in cluster.client.get_events() if topic.startswith("nborch-")]
    assert not left, left


def test_a_stopped_orchestrator_loses_its_lease(workdir: Path, cluster):
    """Stopped (or cut off): its connection stays open, so only the lease tells."""
    path, pid_file, gate = hanging_pipeline(workdir)
    orchestrator = start_run(path, cluster, workdir)
    try:
        kernel = kernel_of(pid_file)
        orchestrator.send_signal(signal.SIGSTOP)
        wait_for(lambda: gone(kernel), "the kernel outlived the lease", 90)
        log = assert_abandoned_and_nothing_late(workdir, only_run(workdir), gate)
        assert "did not renew its lease" in log
    finally:
        orchestrator.send_signal(signal.SIGCONT)
    assert orchestrator.wait(120) == 1
    run = Store(workdir / ".nborch").get_run(only_run(workdir))
    assert run.status == "failed" and run.tasks["hang"].error["type"] == "AttemptAbandoned"


def test_killing_the_scheduler_stops_the_kernel(workdir: Path, tmp_path_factory):
    path, pid_file, gate = hanging_pipeline(workdir)
    doomed = DaskProcesses(tmp_path_factory.mktemp("doomed"))
    try:
        doomed.worker()
        handle = Pipeline.from_yaml(path).start(executor=f"dask://{doomed.address}",
                                                home=workdir / ".nborch")
        kernel = kernel_of(pid_file)
        os.killpg(doomed.procs[0].pid, signal.SIGKILL)  # the scheduler
        run = handle.wait(240)
        wait_for(lambda: gone(kernel), "the kernel outlived its scheduler", 60)
        assert_abandoned_and_nothing_late(workdir, run.run_id, gate)
    finally:
        doomed.stop()
    assert run.status == "failed" and run.tasks["hang"].error["type"] == "DaskSchedulerLost"
    assert Store(workdir / ".nborch").get_run(run.run_id).tasks["hang"].status == "failed"


def test_time_in_dasks_queue_is_queued_and_not_counted_by_timeout(workdir: Path, cluster):
    """One worker thread: ``second`` waits in Dask's queue while ``first`` runs, longer than
    its own timeout, and is ``queued`` meanwhile."""
    write_notebook(workdir / "first.ipynb", "import time\ntime.sleep(6)")
    write_notebook(workdir / "second.ipynb", "pass")
    p = Pipeline("queue", root=workdir)
    p.notebook("first.ipynb")
    p.notebook("second.ipynb", timeout=3)
    states = []
    run = p.start(executor=f"dask://{cluster.address}", home=workdir / ".nborch", max_parallel=2,
                  listeners=[lambda e: states.append((e.task, e.state))
                             if type(e).__name__ == "TaskStateChanged" else None]).wait(240)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert [s for t, s in states if t == "second"] == ["queued", "running", "success"]
    first, second = run.tasks["first"], run.tasks["second"]
    assert second.started_at >= first.ended_at  # it started on the worker only then
    attempts = Store(workdir / ".nborch").attempts(run.run_id, "second")
    assert attempts[0]["started_at"] == second.started_at
