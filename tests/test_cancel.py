"""``nborch cancel RUN_ID``: another process stops a run through the store."""

from __future__ import annotations

from pathlib import Path

import psutil
from conftest import hanging_pipeline, nborch, run_json, start_hanging_run


def test_cancel_stops_a_run_another_process_started(workdir: Path, receiver):
    proc = start_hanging_run(workdir, on_failure=[{"webhook": receiver.url()}])
    kernels = psutil.Process(proc.pid).children(recursive=True)
    [run] = run_json(nborch("runs", "--json", cwd=workdir, check=True))

    cancel = nborch("cancel", run["run_id"], cwd=workdir)
    assert cancel.returncode == 0, cancel.stderr
    assert f"run {run['run_id']} cancelled (2 cancelled)" in cancel.stdout
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # the run's own command says it was cancelled
    shown = run_json(nborch("show", run["run_id"], "--json", cwd=workdir, check=True))
    assert shown["status"] == "cancelled"
    assert {t["status"] for t in shown["tasks"].values()} == {"cancelled"}
    assert "nborch cancel" in shown["tasks"]["later"]["reason"]  # the running one: "while running"
    _, alive = psutil.wait_procs(kernels, timeout=30)
    assert not alive, alive
    [alert] = receiver.answered("/hook")  # an operator's cancel is told to the owners
    assert (alert["hook"], alert["status"], alert["reason"]) == ("on_failure", "cancelled",
                                                                  "cancelled")

    again = nborch("cancel", "latest", cwd=workdir)
    assert again.returncode == 1 and "already ended: cancelled at " in again.stdout
    unknown = nborch("cancel", "no-such-run", cwd=workdir)
    assert unknown.returncode == 2 and "no run 'no-such-run'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_a_run_past_its_run_timeout_fails_and_alerts(workdir: Path, receiver):
    """``run_timeout`` in the file: what runs is stopped, the rest is not started, the run
    fails with the reason and ``on_failure`` fires; ``--run-timeout`` replaces it."""
    hanging_pipeline(workdir, run_timeout="2s", on_failure=[{"webhook": receiver.url()}])
    proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    run = run_json(proc)
    assert run["status"] == "failed" and run["error"]["type"] == "RunTimeout"
    assert "run_timeout of 2.0s" in run["error"]["message"]
    assert {t["status"] for t in run["tasks"].values()} == {"cancelled"}
    assert run["tasks"]["later"]["reason"] == "run timeout"
    [alert] = receiver.answered("/hook")
    assert (alert["hook"], alert["status"], alert["reason"]) == ("on_failure", "failed",
                                                                "run timeout")
    assert alert["error"]["type"] == "RunTimeout"
    bad = nborch("run", "pipeline.yaml", "--run-timeout", "soon", cwd=workdir)
    assert bad.returncode == 2 and "run_timeout: bad duration 'soon'" in bad.stderr
    assert "Traceback" not in bad.stderr
