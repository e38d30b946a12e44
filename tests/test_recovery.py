"""Never lose work: crashed runs, resume, incremental runs, folder pipelines, store safety."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline, Store
from nborch.core.errors import RunMovedOn
from nborch.core.events import RunEnded, RunStarted, TaskStateChanged
from nborch.runtime.recording import Recorder


def counting_notebook(path: Path, counters: Path, *extra: str, parameters: str | None = None):
    """A notebook that appends its task name to ``counters`` each time it runs."""
    return write_notebook(
        path, f"with open({str(counters)!r}, 'a') as fh:\n    fh.write({path.stem!r} + '\\n')",
        *extra, parameters=parameters)


def counts(counters: Path) -> dict[str, int]:
    lines = counters.read_text().split() if counters.exists() else []
    return {name: lines.count(name) for name in set(lines)}


def wait_for(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    return subprocess.Popen([sys.executable, "-m", "nborch", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_sigkilled_run_is_crashed_then_resume_completes_it(workdir: Path):
    counters, pids, gate = workdir / "counters", workdir / "pids", workdir / "gate"
    pids.mkdir()
    counting_notebook(workdir / "a.ipynb", counters)
    counting_notebook(workdir / "b.ipynb", counters,
                      "import os, time\n"
                      f"open({str(pids)!r} + '/' + str(os.getpid()), 'w').close()\n"
                      f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)")
    counting_notebook(workdir / "c.ipynb", counters)
    path = write_pipeline(workdir, {"name": "crashy", "tasks": {
        "a": {"notebook": "a.ipynb"}, "b": {"notebook": "b.ipynb", "upstream": ["a"]},
        "c": {"notebook": "c.ipynb", "upstream": ["b"]}}})
    proc = start_cli(["run", str(path)], workdir)
    wait_for(lambda: any(pids.iterdir()), "task b's kernel")
    kernel = int(next(pids.iterdir()).name)
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator and its whole process group
    proc.wait(timeout=10)

    runs = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    assert [r["status"] for r in runs] == ["crashed"]
    run_id = runs[0]["run_id"]
    wait_for(lambda: process_gone(kernel), "the orphaned kernel to stop", timeout=15)
    shown = run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))
    assert shown["tasks"]["a"]["status"] == "success"
    assert shown["tasks"]["b"]["status"] == "failed"
    assert shown["tasks"]["b"]["error"]["type"] == "OrchestratorDied"
    assert shown["tasks"]["c"]["status"] == "cancelled"

    gate.touch()
    resumed = nborch("resume", run_id, "--json", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    final = run_json(resumed)
    assert final["run_id"] == run_id and final["status"] == "success"
    assert counts(counters) == {"a": 1, "b": 2, "c": 1}  # a was not run again
    assert final["tasks"]["b"]["attempts"] == 2
    assert final["tasks"]["c"]["values"] == {}
    listed = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "success")]


def test_failed_run_resumed_after_fixing_the_cause(workdir: Path):
    counters = workdir / "counters"
    counting_notebook(workdir / "load.ipynb", counters, "import nborch\nnborch.publish('n', 5)")
    fixed = workdir / "fixed"
    counting_notebook(workdir / "model.ipynb", counters,
                      f"import os\nassert os.path.exists({str(fixed)!r}), 'data not fixed yet'\n"
                      "import nborch\n"
                      "nborch.publish('double', upstream['load']['values']['n'] * 2)",
                      parameters="upstream = {}")
    counting_notebook(workdir / "other.ipynb", counters)
    p = Pipeline("fixme")
    load = p.notebook("load.ipynb")
    p.notebook("model.ipynb", upstream=[load])
    p.notebook("other.ipynb", upstream=[load])
    run = p.run()
    assert run.status == "failed" and run.tasks["model"].status == "failed"
    fixed.touch()
    again = run.resume()
    assert again.run_id == run.run_id and again.status == "success"
    assert again.values["model"] == {"double": 10}  # the kept task's values flowed in
    assert counts(counters) == {"load": 1, "model": 2, "other": 1}
    stored = Store(workdir / ".nborch").get_run(run.run_id)
    assert stored.status == "success" and stored.resumes == 1
    history = Store(workdir / ".nborch").attempts(run.run_id, "model")
    assert [(a["attempt"], a["status"]) for a in history] == [(1, "failed"), (2, "success")]


def test_resume_from_reruns_a_task_and_its_downstream(workdir: Path):
    counters = workdir / "counters"
    for name in ("a", "b", "c", "side"):
        counting_notebook(workdir / f"{name}.ipynb", counters)
    path = write_pipeline(workdir, {"name": "from", "tasks": {
        "a": {"notebook": "a.ipynb"}, "b": {"notebook": "b.ipynb", "upstream": ["a"]},
        "c": {"notebook": "c.ipynb", "upstream": ["b"]},
        "side": {"notebook": "side.ipynb", "upstream": ["a"]}}})
    run = run_json(nborch("run", str(path), "--json", cwd=workdir, check=True))
    nothing = nborch("resume", run["run_id"], cwd=workdir)
    assert nothing.returncode == 1 and "nothing to resume" in nothing.stderr
    again = run_json(nborch("resume", "latest", "--from", "b", "--json", cwd=workdir, check=True))
    assert again["status"] == "success"
    assert counts(counters) == {"a": 1, "b": 2, "c": 2, "side": 1}
    bad = nborch("resume", run["run_id"], "--from", "zzz", cwd=workdir)
    assert bad.returncode == 2 and "unknown task 'zzz'" in bad.stderr


def test_incremental_skips_unchanged_and_reruns_what_changed(workdir: Path):
    counters = workdir / "counters"
    counting_notebook(workdir / "extract.ipynb", counters,
                      "import nborch\nnborch.publish('rows', n)", parameters="n = 1")
    counting_notebook(workdir / "clean.ipynb", counters,
                      "import nborch\n"
                      "nborch.publish('rows', upstream['extract']['values']['rows'])",
                      parameters="upstream = {}")
    counting_notebook(workdir / "report.ipynb", counters,
                      "import nborch\nnborch.publish('rows', upstream['clean']['values']['rows'])",
                      parameters="upstream = {}")
    counting_notebook(workdir / "audit.ipynb", counters, parameters="upstream = {}")
    path = write_pipeline(workdir, {"name": "inc", "parameters": {"n": 3}, "tasks": {
        "extract": {"notebook": "extract.ipynb", "parameters": {"n": "{{ params.n }}"}},
        "clean": {"notebook": "clean.ipynb", "upstream": ["extract"]},
        "report": {"notebook": "report.ipynb", "upstream": ["clean"]},
        "audit": {"notebook": "audit.ipynb", "upstream": ["extract"]}}})

    def run(*extra):
        return run_json(nborch("run", str(path), "--incremental", "--json", *extra, cwd=workdir,
                               check=True))

    first = run()
    assert counts(counters) == {"extract": 1, "clean": 1, "report": 1, "audit": 1}
    second = run()
    assert {n: t["status"] for n, t in second["tasks"].items()} == dict.fromkeys(
        ["extract", "clean", "report", "audit"], "skipped")
    # Skipped tasks hand their earlier values and notebooks downstream.
    assert second["tasks"]["report"]["values"] == {"rows": 3}
    assert second["tasks"]["clean"]["output_path"] == first["tasks"]["clean"]["output_path"]
    assert counts(counters) == {"extract": 1, "clean": 1, "report": 1, "audit": 1}

    # Editing a notebook's code re-runs it and its downstream only.
    nb = nbformat.read(workdir / "clean.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("edited = True"))
    nbformat.write(nb, str(workdir / "clean.ipynb"))
    third = run()
    assert {n: t["status"] for n, t in third["tasks"].items()} == {
        "extract": "skipped", "clean": "success", "report": "success", "audit": "skipped"}
    # Outputs and metadata are not the source: saving a notebook with outputs changes nothing.
    nb = nbformat.read(workdir / "audit.ipynb", as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="old output")]
    nb.metadata["foo"] = "bar"
    nbformat.write(nb, str(workdir / "audit.ipynb"))
    assert all(t["status"] == "skipped" for t in run()["tasks"].values())

    # A parameter change re-runs everything that depends on it.
    fourth = run("-p", "n=4")
    assert all(t["status"] == "success" for t in fourth["tasks"].values())
    assert fourth["tasks"]["report"]["values"] == {"rows": 4}
    # --force re-runs one task (and so its downstream).
    fifth = run("-p", "n=4", "--force", "audit")
    assert {n: t["status"] for n, t in fifth["tasks"].items()} == {
        "extract": "skipped", "clean": "skipped", "report": "skipped", "audit": "success"}
    bad = nborch("run", str(path), "--incremental", "--force", "nope", cwd=workdir)
    assert bad.returncode == 2 and "unknown task(s) 'nope'" in bad.stderr


def test_incremental_reruns_a_task_whose_output_notebook_is_gone(workdir: Path):
    write_notebook(workdir / "one.ipynb", "x = 1")
    p = Pipeline("gone")
    p.notebook("one.ipynb")
    first = p.run(incremental=True)
    assert p.run(incremental=True).tasks["one"].status == "skipped"
    os.remove(first.tasks["one"].output_path)
    assert p.run(incremental=True).tasks["one"].status == "success"


def test_pipeline_from_a_folder(workdir: Path):
    flow = workdir / "flow"
    write_notebook(flow / "extract.ipynb", "import nborch\nnborch.publish('v', 2)",
                   parameters="upstream = None")
    write_notebook(flow / "clean.ipynb",
                   "import nborch\nnborch.publish('v', upstream['extract']['values']['v'] + 1)",
                   parameters="upstream = ['extract']")
    write_notebook(flow / "report.ipynb",
                   "import nborch\nnborch.publish('v', upstream['clean']['values']['v'] * 10)",
                   parameters="upstream = ['clean', 'extract']")
    proc = nborch("run", "flow", "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert run["pipeline"] == "flow"
    assert run["tasks"]["report"]["values"] == {"v": 30}
    assert run["tasks"]["report"]["upstream"] == ["clean", "extract"]
    assert nborch("validate", "flow", cwd=workdir).returncode == 0
    nborch("plot", "flow", "-o", "flow.dot", cwd=workdir, check=True)
    assert "clean -> report" in (workdir / "flow.dot").read_text()
    # A cycle declared in parameters cells is caught like any other.
    write_notebook(flow / "extract.ipynb", "x = 1", parameters="upstream = ['report']")
    cyc = nborch("validate", "flow", cwd=workdir)
    assert cyc.returncode == 2 and "cycle" in cyc.stderr
    empty = workdir / "empty"
    empty.mkdir()
    assert nborch("run", "empty", cwd=workdir).returncode == 2


def test_live_run_of_another_process_is_not_taken_for_crashed(workdir: Path):
    gate, started = workdir / "gate", workdir / "started"
    write_notebook(workdir / "wait.ipynb",
                   f"import os, time\nopen({str(started)!r}, 'w').close()\n"
                   f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)")
    path = write_pipeline(workdir, {"name": "live", "tasks": {"wait": {"notebook": "wait.ipynb"}}})
    proc = start_cli(["run", str(path)], workdir)
    try:
        wait_for(started.exists, "the task to start")
        for _ in range(3):
            assert ([r["status"] for r in run_json(nborch("runs", "--json", cwd=workdir))]
                    == ["running"])
        shown = run_json(nborch("show", "latest", "--json", cwd=workdir, check=True))
        assert shown["tasks"]["wait"]["status"] == "running"
        assert nborch("resume", shown["run_id"], cwd=workdir).returncode == 1
    finally:
        gate.touch()
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_runs_of_other_hosts_are_judged_by_heartbeat(workdir: Path):
    store = Store(workdir / ".nborch")
    for run_id, beat in (("fresh", time.time()), ("stale", time.time() - 3600)):
        store.run_started(RunStarted(run_id, "p", "2026-01-01T00:00:00+00:00",
                                     "2026-01-01T00:00:00+00:00", {}, {"t": {"upstream": []}},
                                     None, 12345, "another-host"))
        with store._write() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (beat, run_id))
    assert store.mark_crashed() == ["stale"]
    assert store.get_run("fresh").status == "running"
    assert store.get_run("stale").status == "crashed"
    assert store.get_run("stale").tasks["t"].status == "cancelled"


def test_store_survives_sigkill_at_random_moments(workdir: Path):
    for name in "abcd":
        write_notebook(workdir / f"{name}.ipynb",
                       "import nborch\nfor i in range(3):\n    nborch.publish(f'v{i}', i)")
    path = write_pipeline(workdir, {"name": "killme", "tasks": {
        "a": {"notebook": "a.ipynb"}, "b": {"notebook": "b.ipynb", "upstream": ["a"]},
        "c": {"notebook": "c.ipynb", "upstream": ["a"]},
        "d": {"notebook": "d.ipynb", "upstream": ["b", "c"]}}})
    rng = random.Random(7)
    for _ in range(8):
        proc = start_cli(["run", str(path)], workdir)
        assert proc.stdout.readline().startswith("run ")  # the run is in the store from here on
        time.sleep(rng.uniform(0, 2.5))  # the random moment of the kill (not a synchronisation)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    db = sqlite3.connect(workdir / ".nborch" / "nborch.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    runs = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    assert len(runs) <= 8 and runs
    for r in runs:
        assert r["status"] in ("crashed", "success")
        shown = run_json(nborch("show", r["run_id"], "--json", cwd=workdir, check=True))
        for task in shown["tasks"].values():
            # Nothing is left half-way: every task of a finished or crashed run is final.
            assert task["status"] in ("success", "failed", "cancelled"), shown
        if r["status"] == "crashed":
            resumed = nborch("resume", r["run_id"], "--json", cwd=workdir)
            assert resumed.returncode == 0, resumed.stderr
            assert run_json(resumed)["tasks"]["d"]["values"] == {"v0": 0, "v1": 1, "v2": 2}


def test_listing_stays_indexed_with_10000_runs(workdir: Path):
    store = Store(workdir / ".nborch")
    with store._write() as conn:
        conn.executemany(
            "INSERT INTO runs (run_id, pipeline, status, started_at, ended_at, logical_date,"
            " params) VALUES (?, ?, 'success', ?, ?, ?, '{}')",
            [(f"r{i:05d}", f"p{i % 3}", f"2026-01-01T00:00:{i:05d}", f"2026-01-01T00:00:{i:05d}",
              "2026-01-01") for i in range(10_000)])
    runs = run_json(nborch("runs", "--json", "--pipeline", "p1", "--limit", "5", cwd=workdir,
                           check=True))
    assert [r["run_id"] for r in runs] == ["r09997", "r09994", "r09991", "r09988", "r09985"]
    db = sqlite3.connect(workdir / ".nborch" / "nborch.db")
    for sql in ("SELECT * FROM runs ORDER BY started_at DESC LIMIT 50",
                "SELECT * FROM runs WHERE pipeline = 'p1' ORDER BY started_at DESC LIMIT 50",
                "SELECT * FROM runs WHERE status = 'running'"):
        plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (sql, plan)
        assert "TEMP B-TREE" not in plan, (sql, plan)


def test_old_store_schema_is_migrated(workdir: Path):
    home = workdir / ".nborch"
    home.mkdir()
    db = sqlite3.connect(home / "nborch.db")
    from nborch.store.schema import MIGRATIONS
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("INSERT INTO runs (run_id, pipeline, status, started_at, logical_date, params)"
               " VALUES ('old', 'p', 'success', '2025-01-01', '2025-01-01', '{}')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    runs = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    assert runs[0]["run_id"] == "old"
    from nborch.store.schema import SCHEMA_VERSION
    assert sqlite3.connect(home / "nborch.db").execute("PRAGMA user_version").fetchone()[0] == \
        SCHEMA_VERSION
    sqlite3.connect(home / "nborch.db").execute("PRAGMA user_version = 99").connection.commit()
    newer = nborch("runs", cwd=workdir)
    assert newer.returncode == 1 and "newer than this nborch understands" in newer.stderr


def test_a_late_result_of_a_run_taken_over_is_not_recorded(workdir: Path):
    """An orchestrator that stopped for long (the run was then resumed, or recorded crashed,
    by another process) records nothing of it when it wakes: not its attempt's late "ok"."""
    store = Store(workdir / ".nborch")
    now = "2026-01-01T00:00:00+00:00"
    ok = TaskStateChanged("r", "t", "success", 1, now, values={"late": 1},
                          attempt_status="success")
    for takeover in ("resumed", "recorded crashed"):
        run_id = f"r-{takeover.split()[-1]}"
        started = RunStarted(run_id, "p", now, now, {}, {"t": {"upstream": []}}, None,
                             os.getpid(), "this-host")
        stalled = Recorder(store, run_id)
        stalled(started)
        stalled(TaskStateChanged(run_id, "t", "running", 1, now))
        if takeover == "resumed":
            Recorder(store, run_id)(dataclasses.replace(started, resumes=1, rerun=("t",)))
        else:
            store.run_ended(RunEnded(run_id, "crashed", now))
        with pytest.raises(RunMovedOn, match=f"was {takeover} by another nborch process"):
            stalled(dataclasses.replace(ok, run_id=run_id))
        task = store.get_run(run_id).tasks["t"]
        assert task.status != "success" and task.values == {}
        assert [a["status"] for a in store.attempts(run_id)] == ["running"]
