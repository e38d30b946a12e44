"""The ``nborch`` command end to end, in real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, nborch, run_json, write_notebook, write_pipeline

DEMO = REPO / "notebooks" / "demo" / "pipeline.yaml"


def test_demo_pipeline_runs_and_is_recorded(workdir: Path):
    proc = nborch("run", str(DEMO), "-p", "n_rows=500", "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert set(run) >= {"run_id", "pipeline", "status", "started_at", "ended_at", "tasks"}
    assert run["status"] == "success"
    assert run["params"] == {"seed": 42, "n_rows": 500}
    tasks = run["tasks"]
    assert list(tasks) == ["generate", "clean", "by_region", "by_product", "report", "export"]
    for name, task in tasks.items():
        assert set(task) >= {"status", "attempts", "started_at", "ended_at", "output_path",
                             "values", "error"}
        assert name == "export" or Path(task["output_path"]).is_file()
    # The command task got the notebooks' values and wrote its declared product.
    export = json.loads(Path(tasks["export"]["products"]["product"]).read_text())
    assert export["total_revenue"] == tasks["report"]["values"]["total_revenue"]
    assert tasks["export"]["values"]["exported"] == tasks["export"]["products"]["product"]
    assert tasks["generate"]["values"]["row_count"] == 500
    assert tasks["clean"]["values"]["row_count"] + tasks["clean"]["values"]["dropped_rows"] == 500
    total = tasks["report"]["values"]["total_revenue"]
    assert abs(total - sum(tasks["by_region"]["values"]["revenue_by_region"].values())) < 0.1
    assert Path(tasks["report"]["values"]["report_png"]).read_bytes()[:4] == b"\x89PNG"
    # The run id was announced at the start (on stderr, since stdout is the JSON).
    assert proc.stderr.splitlines()[0].startswith(f"run {run['run_id']} of demo_sales started")

    listed = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    assert listed == [{"run_id": run["run_id"], "pipeline": "demo_sales", "status": "success",
                       "started_at": run["started_at"], "ended_at": run["ended_at"],
                       "logical_date": run["logical_date"], "trigger": "manual",
                       "pipeline_last_success_at": run["ended_at"]}]
    shown = run_json(nborch("show", run["run_id"], "--json", cwd=workdir, check=True))
    for name, task in run["tasks"].items():
        assert {k: shown["tasks"][name][k] for k in task} == task
    text = nborch("show", "latest", cwd=workdir, check=True).stdout
    assert "report" in text and "success" in text and "total_revenue" in text
    logs = nborch("logs", run["run_id"], "report", cwd=workdir, check=True).stdout
    assert "Total revenue" in logs


def test_failed_run_exits_1_and_show_gives_the_error(workdir: Path):
    write_notebook(workdir / "a.ipynb", "print('hello from a')")
    write_notebook(workdir / "b.ipynb", "x = 1", "raise KeyError('missing column: price')")
    path = write_pipeline(workdir, {"name": "fails", "tasks": {
        "a": {"notebook": "a.ipynb"}, "b": {"notebook": "b.ipynb", "upstream": ["a"]}}})
    proc = nborch("run", str(path), cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    # Not a terminal: plain progress lines.
    assert "a: running (attempt 1)" in proc.stdout
    assert "b: failed - KeyError" in proc.stdout
    run_id = proc.stdout.split()[1]
    shown = run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))
    assert shown["status"] == "failed"
    assert shown["tasks"]["b"]["error"]["type"] == "KeyError"
    assert shown["tasks"]["b"]["error"]["cell"] == 3
    text = nborch("show", run_id, cwd=workdir, check=True).stdout
    assert "b failed in cell 3: KeyError" in text
    assert "raise KeyError" in text
    assert "hello from a" in nborch("logs", run_id, "a", cwd=workdir, check=True).stdout
    missing = nborch("logs", run_id, "zzz", cwd=workdir)
    assert missing.returncode == 2 and "has no task 'zzz'" in missing.stderr
    unknown = nborch("show", "nope", cwd=workdir)
    assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr


def test_validate_and_plot(workdir: Path):
    proc = nborch("validate", str(DEMO), cwd=workdir)
    assert proc.returncode == 0 and "is valid (6 tasks)" in proc.stdout
    proc = nborch("plot", str(DEMO), "-o", "dag.svg", cwd=workdir, check=True)
    svg = (workdir / "dag.svg").read_text()
    for task in ("generate", "clean", "by_region", "by_product", "report", "export"):
        assert f'id="{task}"' in svg
    nborch("plot", str(DEMO), "-o", "dag.dot", cwd=workdir, check=True)
    assert '"clean" -> by_region' in (workdir / "dag.dot").read_text() or \
        "clean -> by_region" in (workdir / "dag.dot").read_text()
    assert not (workdir / ".nborch").exists()  # validate and plot record nothing


def test_two_runs_share_one_store_at_once(workdir: Path):
    for name in ("x", "y"):
        write_notebook(workdir / f"{name}.ipynb",
                       "import time, nborch\nfor i in range(5):\n    time.sleep(0.1)\n"
                       "    nborch.publish(f'v{i}', i)")
    paths = [write_pipeline(workdir, {"name": f"p{i}", "tasks": {
        "x": {"notebook": "x.ipynb"}, "y": {"notebook": "y.ipynb", "upstream": ["x"]}}},
        name=f"p{i}.yaml") for i in range(2)]
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    procs = [subprocess.Popen([sys.executable, "-m", "nborch", "run", str(p), "--json"],
                              cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for p in paths]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    assert sorted(r["pipeline"] for r in runs) == ["p0", "p1"]
    assert all(r["status"] == "success" for r in runs)
    for r in runs:
        shown = run_json(nborch("show", r["run_id"], "--json", cwd=workdir, check=True))
        assert shown["tasks"]["y"]["values"] == {f"v{i}": i for i in range(5)}
    db = sqlite3.connect(workdir / ".nborch" / "nborch.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ctrl_c_cancels_cleanly(workdir: Path):
    pids = workdir / "pids"
    pids.mkdir()
    write_notebook(workdir / "slow.ipynb",
                   f"import os, time\nopen({str(pids)!r} + '/' + str(os.getpid()), 'w').close()\n"
                   "time.sleep(300)")
    write_notebook(workdir / "after.ipynb", "pass")
    path = write_pipeline(workdir, {"name": "slow", "tasks": {
        "slow": {"notebook": "slow.ipynb"},
        "after": {"notebook": "after.ipynb", "upstream": ["slow"]}}})
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", str(path)], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(pids.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "cancelled" in err
    kernel_pid = int(next(pids.iterdir()).name)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{kernel_pid}").exists() and \
            Path(f"/proc/{kernel_pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the kernel outlived the cancelled run"
        time.sleep(0.05)
    shown = run_json(nborch("show", "latest", "--json", cwd=workdir, check=True))
    assert shown["status"] == "cancelled"
    assert shown["tasks"]["slow"]["status"] == "cancelled"
    assert shown["tasks"]["after"]["status"] == "cancelled"


def test_python_m_nborch_and_version(workdir: Path):
    proc = nborch("--version", cwd=workdir)
    assert proc.returncode == 0 and proc.stdout.startswith("nborch ")
    proc = subprocess.run(["nborch", "--help"], capture_output=True, text=True,
                          env={**os.environ,
                               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert proc.returncode == 0 and "validate" in proc.stdout
