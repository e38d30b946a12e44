"""``nborch cancel RUN_ID``: another process stops a run through the store."""

from __future__ import annotations

from pathlib import Path

import psutil

from conftest import nborch, run_json, start_hanging_run


def test_cancel_stops_a_run_another_process_started(workdir: Path):
    proc = start_hanging_run(workdir)
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

    again = nborch("cancel", "latest", cwd=workdir)
    assert again.returncode == 1 and "already ended: cancelled at " in again.stdout
    unknown = nborch("cancel", "no-such-run", cwd=workdir)
    assert unknown.returncode == 2 and "no run 'no-such-run'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
