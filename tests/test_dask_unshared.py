"""Dask workers that do not see the orchestrator's ``$NBORCH_HOME`` (workers on other hosts):
here a real ``dask worker`` in a mount namespace of its own, with an empty folder mounted
over the home. With ``--output-dir`` (a folder both see) that is all they need: the
orchestrator writes the logs from the masked output the worker sends, and the artifacts are
copied to the output location."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import nborch, run_json, wait_until, write_notebook, write_pipeline
from dask_cluster import DaskProcesses
from hypothesis import given, settings
from hypothesis import strategies as st

from nborch import Pipeline, Store
from nborch.execution.attempt import AttemptJob, AttemptResult
from nborch.execution.executors import dask_log
from nborch.execution.executors.dask_log import RelayedLogs

SECRET = "unshared-s3cr3t-v4lue"


@pytest.fixture
def unshared(workdir: Path, tmp_path_factory):
    """A cluster whose one worker sees the project (``workdir``) but not the home, ``home``
    in it: (the cluster, the home)."""
    home = workdir / "home"
    home.mkdir()
    hide = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs none {home} && exec "$0" "$@"')
    if subprocess.run([*hide[:-1], "exit 0"]).returncode != 0 or \
            subprocess.run([*hide, "true"]).returncode != 0:
        pytest.skip("needs unshare and mount (root, or a user namespace)")
    cluster = DaskProcesses(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.worker(wrap=hide)
        yield cluster, home
    finally:
        cluster.stop()


def run_on(unshared, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cluster, home = unshared
    return nborch("run", "pipeline.yaml", "--executor", f"dask://{cluster.address}", "--json",
                  *args, cwd=workdir, env={"NBORCH_HOME": str(home)})


def test_a_worker_that_cannot_see_the_home_needs_only_the_output_dir(workdir: Path, unshared):
    _, home = unshared
    (workdir / ".env").write_text(f"TOKEN={SECRET}\n")
    write_notebook(workdir / "talk.ipynb",
                   "import sys, nborch\nprint('token', nborch.secret('TOKEN'))\n"
                   "for i in range(300):\n    print('line', i)\n"
                   "print('to stderr', file=sys.stderr)",
                   "path = nborch.artifact_path('nested/table.csv')\n"
                   "path.write_text('a,b\\n1,2\\n')\nnborch.publish('written_at', str(path))")
    tries = workdir / "tries"
    write_notebook(workdir / "flaky.ipynb",
                   f"import os\np = {str(tries)!r}\n"
                   "n = int(open(p).read()) if os.path.exists(p) else 0\n"
                   "open(p, 'w').write(str(n + 1))\nassert n >= 1, 'first try fails'")
    write_pipeline(workdir, {"name": "unshared", "secrets": ["TOKEN"], "tasks": {
        "talk": {"notebook": "talk.ipynb"},
        "flaky": {"notebook": "flaky.ipynb", "retries": 1, "retry_delay": "0s"},
        "cmd": {"command": [sys.executable, "-c", "import nborch\nprint('from the command')\n"
                                                  "nborch.publish('rows', 2)"]}}})
    out = workdir / "out"
    proc = run_on(unshared, workdir, "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = run_json(proc)
    run_id, tasks = run["run_id"], run["tasks"]
    assert tasks["flaky"]["attempts"] == 2
    assert tasks["cmd"]["values"] == {"rows": 2}  # its values file was the worker's own
    assert sorted(p.name for p in (out / run_id).glob("*.ipynb")) == [
        "flaky.attempt-1.ipynb", "flaky.ipynb", "talk.ipynb"]

    # The logs, written by the orchestrator: complete, in order, masked, start to end.
    logs = home / "runs" / run_id
    talk = (logs / "talk.log").read_text()
    assert talk.startswith("--- attempt 1 started ")
    assert [ln for ln in talk.splitlines() if ln.startswith("line ")] == [
        f"line {i}" for i in range(300)]
    assert "token ***" in talk and "to stderr" in talk and SECRET not in talk
    artifacts = out / run_id / "artifacts" / "talk"
    assert talk.splitlines()[-2:] == [
        f"--- attempt 1: artifacts copied to {artifacts} ---",
        talk.splitlines()[-1]] and talk.endswith(": ok ---\n")
    flaky = (logs / "flaky.log").read_text()
    assert flaky.index("--- attempt 1 ended ") < flaky.index("--- attempt 2 started ")
    assert ": AssertionError ---" in flaky and flaky.endswith(": ok ---\n")
    assert "from the command" in (logs / "cmd.log").read_text()
    shown = nborch("logs", run_id, "talk", cwd=workdir, env={"NBORCH_HOME": str(home)})
    assert "line 299" in shown.stdout and "token ***" in shown.stdout

    # The artifact is in the output location; the worker's temporary folder is gone.
    assert (artifacts / "nested" / "table.csv").read_text() == "a,b\n1,2\n"
    assert not Path(tasks["talk"]["values"]["written_at"]).exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"nborch-{run_id}-*"))
    for file in workdir.rglob("*"):  # the store, the logs, notebooks, artifacts
        assert SECRET not in str(file)
        if file.is_file() and file.name != ".env":
            assert SECRET.encode() not in file.read_bytes(), file


def test_logs_follow_a_task_on_a_worker_that_cannot_see_the_home(workdir: Path, unshared):
    cluster, home = unshared
    gate = workdir / "gate"
    write_notebook(workdir / "wait.ipynb", "print('before the gate', flush=True)",
                   f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n"
                   "    time.sleep(0.05)\nprint('after the gate')")
    write_pipeline(workdir, {"name": "follow", "tasks": {"wait": {"notebook": "wait.ipynb"}}})
    env = {"NBORCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    running = subprocess.Popen(
        [sys.executable, "-m", "nborch", "run", "pipeline.yaml", "--executor",
         f"dask://{cluster.address}", "--output-dir", str(workdir / "out")],
        cwd=workdir, env={**_environ(), **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        store = Store(home)
        wait_until(lambda: store.exists and store.list_runs(), "the run to start")
        run_id = store.list_runs()[0]["run_id"]
        log = store.log_path(run_id, "wait")
        wait_until(lambda: log.exists() and "before the gate" in log.read_text(),
                   "the output before the gate to reach the log")
        follow = subprocess.Popen([sys.executable, "-m", "nborch", "logs", run_id, "wait",
                                   "--follow"], cwd=workdir, env={**_environ(), **env},
                                  stdout=subprocess.PIPE, text=True)
        gate.touch()
        followed, _ = follow.communicate(timeout=120)
        assert running.wait(120) == 0
    finally:
        running.kill()
    assert "before the gate" in followed and "after the gate" in followed
    assert followed.rstrip().endswith(": ok ---")


def test_without_an_output_dir_such_a_worker_fails_the_attempt_clearly(workdir: Path,
                                                                      unshared):
    _, home = unshared
    write_notebook(workdir / "a.ipynb", "pass")
    write_pipeline(workdir, {"name": "unseen", "tasks": {"a": {"notebook": "a.ipynb"}}})
    proc = run_on(unshared, workdir)
    assert proc.returncode == 1, proc.stderr
    run = run_json(proc)
    error = run["tasks"]["a"]["error"]
    assert error["type"] == "HomeNotShared"
    assert f"cannot see {home / 'runs' / run['run_id']}, the run's folder in nborch's home " \
        f"{home}, where a run without --output-dir writes its executed notebooks and " \
        "artifacts: give the run an --output-dir every worker can write" in error["message"]
    assert (home / "nborch.db").is_file()  # the store stays on the orchestrator's disk


def test_a_cancelled_attempt_on_such_a_worker_ends_its_log_cancelled(workdir: Path,
                                                                      unshared):
    """The run gave the attempt up: the orchestrator ends the log at once, and what the
    worker still sends before its kernel is stopped is not appended after the end."""
    cluster, home = unshared
    pid = workdir / "kernel.pid"
    write_notebook(workdir / "slow.ipynb",
                   f"import os, time\nopen({str(pid)!r}, 'w').write(str(os.getpid()))\n"
                   "print('working', flush=True)\nwhile True:\n"
                   "    print('still working', flush=True)\n    time.sleep(0.05)")
    p = Pipeline("cancelme", root=workdir)
    p.notebook("slow.ipynb")
    handle = p.start(executor=f"dask://{cluster.address}", home=home,
                     output_dir=workdir / "out")
    log = Store(home).log_path(handle.run_id, "slow")
    wait_until(lambda: log.exists() and "still working" in log.read_text(),
               "the output to reach the log")
    kernel = int(pid.read_text())
    handle.cancel()
    assert handle.wait(120).tasks["slow"].status == "cancelled"
    wait_until(lambda: not psutil.pid_exists(kernel)
               or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE,
               "the kernel on the worker to stop")
    wait_until(lambda: not any(cluster.client.processing().values()),
               "the worker to let the attempt go")
    text = log.read_text()
    assert text.startswith("--- attempt 1 started ") and "working\n" in text
    assert text.splitlines()[-1].endswith(": Cancelled ---")


def _environ() -> dict:
    return {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}


# -- the orchestrator's side of a relayed log, on its own --------------------------------

def relayed_log(folder: Path) -> tuple[RelayedLogs, list, Path]:
    """A relayed log of attempt 1 of task ``t``, started: (the logs, what was posted to the
    event thread, the log file)."""
    posted: list = []
    logs = RelayedLogs(posted.append)
    path = folder / "t.log"
    logs.add("key", AttemptJob(run_id="r", task="t", attempt=1, notebook="", parameters={},
                               kernel="", cwd=str(folder), output_path="", log_path=str(path)))
    logs.relayed("key", drained=False)
    logs.started("t", 1, "T0")
    return logs, posted, path


def exact(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as log:  # \r kept
        return log.read()


RESULT = AttemptResult("success", "T0", "T1", None, relayed_log=True)


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.text(min_size=1), max_size=6), result_first=st.booleans())
def test_a_relayed_log_ends_after_all_its_output_whenever_the_result_comes(
        tmp_path_factory, chunks, result_first):
    logs, _, path = relayed_log(tmp_path_factory.mktemp("log"))
    delivered: list = []

    def deliver() -> None:
        delivered.append(exact(path))
    if result_first:  # the result overtook the last output
        logs.end("key", RESULT, deliver)
    for chunk in chunks:
        logs.output("t", 1, chunk)
    assert not delivered
    logs.relayed("key", drained=True)
    if not result_first:
        logs.end("key", RESULT, deliver)
    logs.output("t", 1, "too late")
    expected = ("--- attempt 1 started T0 ---\n" + "".join(chunks)
                + "--- attempt 1 ended T1: ok ---\n")
    assert delivered == [expected] and exact(path) == expected


def test_a_relayed_log_whose_worker_never_drains_ends_at_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(dask_log, "DRAIN_WAIT", 0.01)
    logs, posted, path = relayed_log(tmp_path)
    delivered: list = []
    logs.output("t", 1, "some output\n")
    logs.end("key", RESULT, lambda: delivered.append(1))
    wait_until(lambda: posted, "the drain deadline")
    posted[0]()  # as the event thread runs it
    logs.relayed("key", drained=True)  # too late: nothing more
    assert delivered == [1]
    assert path.read_text().endswith("some output\n--- attempt 1 ended T1: ok ---\n")
