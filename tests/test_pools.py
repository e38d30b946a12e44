"""Pools: at most N tasks of a pool run at once across every run on a store.

Real ``nborch`` processes share a real store; command tasks append ``start``/``end`` lines
to one log (appends of a line are atomic), so the log's order proves how many ran at once,
without reading any clock. Waits are polls with deadlines on files and the store.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nborch, write_pipeline
from hypothesis import given, settings
from hypothesis import strategies as st

WORKER = """\
import os, sys, time
log, name, gate = sys.argv[1], sys.argv[2], sys.argv[3]
def note(what):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{what} {name}\\n".encode())
    os.close(fd)
note("start")
deadline = time.monotonic() + 120
while gate != "-" and not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(0.2)  # hold the slot a little: overlapping tasks would show in the log
note("end")
"""


def _env() -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "NBORCH_HOME"},
            "PYTHONUNBUFFERED": "1"}


def _pipeline(folder: Path, name: str, tasks: dict[str, str | None], pool: str = "wh") -> str:
    """``NAME.yaml``: command tasks (name -> gate file or None) in ``pool`` (set in
    ``defaults``) that log their start and end to ``log``."""
    (folder / "worker.py").write_text(WORKER)
    spec = {"name": name, "defaults": {"pool": pool}, "tasks": {
        task: {"command": [sys.executable, str(folder / "worker.py"), str(folder / "log"),
                           task, str(folder / gate) if gate else "-"]}
        for task, gate in tasks.items()}}
    write_pipeline(folder, spec, f"{name}.yaml")
    return f"{name}.yaml"


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_run_left_behind():
    """A test that fails while a run waits for a gate leaves no process running."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _start(folder: Path, pipeline: str) -> subprocess.Popen:
    """``nborch run PIPELINE`` in a process group of its own (its commands in it too)."""
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", pipeline, "--json"],
                            cwd=folder, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _STARTED.append(proc)
    return proc


def _log(folder: Path) -> list[str]:
    path = folder / "log"
    return path.read_text().splitlines() if path.exists() else []


def _wait(what: str, check, procs=(), deadline: float = 120):
    end = time.monotonic() + deadline
    while not (found := check()):
        for proc in procs:
            assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < end, f"{what}: not within {deadline:g}s"
        time.sleep(0.05)
    return found


def _run_of(folder: Path, pipeline: str) -> str | None:
    runs = json.loads(nborch("runs", "--json", cwd=folder, env=_env(), check=True).stdout)
    return next((r["run_id"] for r in runs if r["pipeline"] == pipeline), None)


def _show(folder: Path, run_id: str) -> dict:
    return json.loads(nborch("show", run_id, "--json", cwd=folder, env=_env(),
                             check=True).stdout)


def _most_at_once(log: list[str]) -> int:
    running, most = 0, 0
    for line in log:
        running += 1 if line.startswith("start ") else -1
        most = max(most, running)
    return most


def _pools(folder: Path) -> dict:
    out = nborch("pool", "list", "--json", cwd=folder, env=_env(), check=True).stdout
    return {p["name"]: p for p in json.loads(out)}


def test_two_runs_never_run_two_tasks_of_a_one_slot_pool_at_once(workdir):
    nborch("pool", "set", "wh", "--slots", "1", cwd=workdir, check=True)
    first = _start(workdir, _pipeline(workdir, "first", {"a": "go"}))
    _wait("task a started", lambda: "start a" in _log(workdir), [first])
    # b1 and b2 are independent: without the pool they would run at once, beside a
    second = _start(workdir, _pipeline(workdir, "second", {"b1": None, "b2": None}))
    run_id = _wait("the second run recorded", lambda: _run_of(workdir, "second"), [second])

    def both_queued():
        tasks = _show(workdir, run_id)["tasks"]
        return all(tasks[t]["status"] == "queued" and "'wh'" in tasks[t].get("reason", "")
                   for t in ("b1", "b2")) and tasks
    tasks = _wait("b1 and b2 queued for pool wh", both_queued, [first, second])
    assert tasks["b1"]["pool"] == "wh" and "waiting for a slot" in tasks["b1"]["reason"]
    pool = _pools(workdir)["wh"]
    assert (pool["slots"], pool["used"], pool["queued"]) == (1, 1, 2)
    assert pool["running"][0]["task"] == "a"
    assert _log(workdir) == ["start a"]  # nothing of the second run started meanwhile

    (workdir / "go").touch()
    for proc in (first, second):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    log = _log(workdir)
    assert sorted(log) == sorted(f"{e} {t}" for e in ("start", "end") for t in ("a", "b1", "b2"))
    assert _most_at_once(log) == 1, log
    done = _show(workdir, run_id)["tasks"]
    assert [done[t]["status"] for t in ("b1", "b2")] == ["success", "success"]
    assert "reason" not in done["b1"]  # the wait is over: no stale reason
    assert _pools(workdir)["wh"]["used"] == 0  # every slot was given back


def test_a_pool_of_two_runs_two_at_once_and_a_slot_goes_back_on_each_end(workdir):
    nborch("pool", "set", "wh", "--slots", "2", cwd=workdir, check=True)
    tasks = {f"t{i}": None for i in range(5)}
    proc = nborch("run", _pipeline(workdir, "wide", tasks), "--max-parallel", "5",
                  cwd=workdir, env=_env())
    assert proc.returncode == 0, proc.stderr
    log = _log(workdir)
    assert len(log) == 10 and _most_at_once(log) <= 2, log


def _one_holds_one_waits(folder: Path, gate: str):
    """A run whose task ``hold`` holds the one slot of pool wh until ``gate`` exists, and a
    second whose task ``after`` is queued for it: (the first, the second, its run id)."""
    nborch("pool", "set", "wh", "--slots", "1", cwd=folder, check=True)
    holder = _start(folder, _pipeline(folder, "holder", {"hold": gate}))
    _wait("task hold started", lambda: "start hold" in _log(folder), [holder])
    waiting = _start(folder, _pipeline(folder, "waiting", {"after": None}))
    run_id = _wait("the waiting run recorded", lambda: _run_of(folder, "waiting"), [waiting])
    _wait("task after queued", lambda: _show(folder, run_id)["tasks"]["after"]["status"]
          == "queued", [holder, waiting])
    return holder, waiting, run_id


def test_a_killed_runs_slot_is_freed_for_a_run_waiting_for_it(workdir):
    doomed, waiting, _ = _one_holds_one_waits(workdir, "never")
    assert (_pools(workdir)["wh"]["used"], _pools(workdir)["wh"]["queued"]) == (1, 1)
    os.killpg(doomed.pid, signal.SIGKILL)  # the run's process and its command: no goodbye
    doomed.communicate(timeout=60)
    out, err = waiting.communicate(timeout=120)  # its engine frees the dead run's slot
    assert waiting.returncode == 0, err
    assert _log(workdir) == ["start hold", "start after", "end after"]
    assert _show(workdir, _run_of(workdir, "holder"))["status"] == "crashed"
    assert _pools(workdir)["wh"]["used"] == 0


def test_a_dead_runs_slot_counts_as_free_before_anyone_writes(workdir):
    nborch("pool", "set", "wh", "--slots", "1", cwd=workdir, check=True)
    doomed = _start(workdir, _pipeline(workdir, "doomed", {"hold": "never"}))
    _wait("task hold started", lambda: "start hold" in _log(workdir), [doomed])
    assert _pools(workdir)["wh"]["used"] == 1
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.communicate(timeout=60)
    assert _pools(workdir)["wh"]["used"] == 0  # `pool list` reads: it tells dead runs too


def test_a_run_waiting_for_a_slot_can_be_cancelled_and_takes_none(workdir):
    holder, waiting, run_id = _one_holds_one_waits(workdir, "go")
    nborch("cancel", run_id, cwd=workdir, env=_env(), check=True)
    assert waiting.wait(timeout=60) == 130
    assert _show(workdir, run_id)["tasks"]["after"]["status"] == "cancelled"
    assert [p["running"][0]["task"] for p in _pools(workdir).values()] == ["hold"]
    (workdir / "go").touch()
    assert holder.wait(timeout=120) == 0
    assert _log(workdir) == ["start hold", "end hold"]


def test_a_resume_checks_its_pools_again_and_takes_a_slot(workdir):
    nborch("pool", "set", "wh", "--slots", "1", cwd=workdir, check=True)
    fix = workdir / "fixed"
    write_pipeline(workdir, {"name": "flaky", "tasks": {"t": {"pool": "wh", "command": [
        sys.executable, "-c", f"import os, sys; sys.exit(not os.path.exists({str(fix)!r}))"]}}},
        "flaky.yaml")
    assert nborch("run", "flaky.yaml", cwd=workdir, env=_env()).returncode == 1
    run_id = _run_of(workdir, "flaky")
    nborch("pool", "remove", "wh", cwd=workdir, check=True)  # its run ended: not in use
    proc = nborch("resume", run_id, cwd=workdir, env=_env())
    assert proc.returncode == 2 and "pool 'wh' (of task 't') is not set" in proc.stderr
    nborch("pool", "set", "wh", "--slots", "1", cwd=workdir, check=True)
    fix.touch()
    proc = nborch("resume", run_id, cwd=workdir, env=_env())
    assert proc.returncode == 0, proc.stderr
    task = _show(workdir, run_id)["tasks"]["t"]
    assert (task["status"], task["attempts"], task["pool"]) == ("success", 2, "wh")
    assert _pools(workdir)["wh"]["used"] == 0


def test_an_unknown_pool_is_a_validation_error_and_nothing_runs(workdir):
    nborch("pool", "set", "other", "--slots", "1", cwd=workdir, check=True)
    pipeline = _pipeline(workdir, "lost", {"x": None, "y": None}, pool="warehouse")
    for command in ("validate", "run"):
        proc = nborch(command, pipeline, cwd=workdir, env=_env())
        assert proc.returncode == 2, proc.stderr
        assert "pool 'warehouse' (of task 'x', task 'y') is not set in the run store " \
            "(pools: other)" in proc.stderr
        assert "nborch pool set warehouse --slots N" in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert not (workdir / "log").exists()
    assert _run_of(workdir, "lost") is None


def test_a_task_pool_must_be_a_pool_name(workdir):
    _pipeline(workdir, "bad", {"x": None}, pool="no spaces")
    proc = nborch("validate", "bad.yaml", cwd=workdir, env=_env())
    assert proc.returncode == 2 and "pool name 'no spaces' is not valid" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["set", "wh", "--slots", "0"], "slots must be a whole number from 1"),
    (["set", "wh", "--slots", "-3"], "slots must be a whole number from 1"),
    (["set", "wh", "--slots", "10001"], "slots must be a whole number from 1"),
    (["set", "wh", "--slots", "two"], "invalid int value"),
    (["set", "-wh", "--slots", "1"], "the following arguments are required: name"),
    (["set", "w/h", "--slots", "1"], "pool name 'w/h' is not valid"),
    (["set", "", "--slots", "1"], "pool name '' is not valid"),
    (["remove", "nope"], "no pool 'nope'"),
])
def test_pool_commands_refuse_bad_input_with_exit_2(workdir, args, message):
    proc = nborch("pool", *args, cwd=workdir, env=_env())
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert _pools(workdir) == {}  # nothing was created


def test_a_pool_in_use_is_not_removed_until_its_runs_end(workdir):
    nborch("pool", "set", "wh", "--slots", "1", cwd=workdir, check=True)
    run = _start(workdir, _pipeline(workdir, "busy", {"t": "go"}))
    _wait("task t started", lambda: "start t" in _log(workdir), [run])
    proc = nborch("pool", "remove", "wh", cwd=workdir, env=_env())
    assert proc.returncode == 1 and "is in use" in proc.stderr, proc.stderr
    assert _run_of(workdir, "busy") in proc.stderr
    assert "wh" in _pools(workdir)
    (workdir / "go").touch()
    assert run.wait(timeout=120) == 0
    nborch("pool", "remove", "wh", cwd=workdir, check=True)
    assert _pools(workdir) == {}


def _cli(*argv: str) -> tuple[int, str, str]:
    from nborch.ui.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=60, deadline=None)
@given(name=st.text(min_size=0, max_size=70))
def test_any_pool_name_is_kept_exactly_or_refused_in_one_line(tmp_path_factory, name):
    home = str(tmp_path_factory.mktemp("home"))
    code, out, err = _cli("--home", home, "pool", "set", name, "--slots", "3")
    if code == 0:
        listed = json.loads(_cli("--home", home, "pool", "list", "--json")[1])
        assert [(p["name"], p["slots"]) for p in listed] == [(name, 3)]
        assert _cli("--home", home, "pool", "remove", name)[0] == 0
    else:
        assert code == 2 and "Traceback" not in err
        assert err.count("\n") <= 2  # argparse: usage and error; nborch: one line


@settings(max_examples=60, deadline=None)
@given(name=st.one_of(st.text(max_size=70), st.integers(), st.none(), st.booleans()))
def test_a_pool_option_is_a_name_or_a_spec_error(tmp_path_factory, name):
    from nborch import Pipeline
    from nborch.core.errors import SpecError
    pipeline = Pipeline("p", root=tmp_path_factory.mktemp("p"))
    try:
        task = pipeline.command([sys.executable, "-c", "pass"], name="t", pool=name)
    except SpecError as exc:
        assert "pool name" in str(exc) and name is not None
    else:
        assert task.pool == name


def test_the_python_api_checks_pools_against_its_store_and_records_them(tmp_path):
    from nborch import Pipeline, Store
    from nborch.core.errors import ValidationError
    home = tmp_path / "home"
    pipeline = Pipeline("api", root=tmp_path, pool="wh")  # a default of every task
    pipeline.command([sys.executable, "-c", "pass"], name="t")
    with pytest.raises(ValidationError, match=r"pool 'wh' \(of task 't'\) is not set"):
        pipeline.validate(home=home)
    with pytest.raises(ValidationError, match="nborch pool set wh --slots N"):
        pipeline.run(home=home)
    assert Store(home).list_runs() == []  # nothing was recorded
    Store(home).set_pool("wh", 1)
    pipeline.validate(home=home)
    run = pipeline.run(home=home)
    assert run.ok and run.tasks["t"].pool == "wh"
    assert Store(home, readonly=True).get_run(run.run_id).tasks["t"].pool == "wh"
    assert Store(home, readonly=True).pools()[0]["running"] == []


def test_views_say_which_pool_a_queued_task_waits_for():
    from rich.console import Console

    from nborch.core.pools import waiting_reason
    from nborch.core.run import Run, TaskRun
    from nborch.ui import htmlview
    from nborch.ui.console import print_run
    waiting = TaskRun("load", status="queued", reason=waiting_reason("wh"), pool="wh")
    run = Run("r1", "p", "running", tasks={"load": waiting, "free": TaskRun("free")})
    out = io.StringIO()
    print_run(run, Console(file=out, width=200))
    assert "load: waiting for a slot in pool 'wh'" in out.getvalue()
    assert "waiting for a slot in pool &#39;wh&#39;</td>" in str(htmlview.task_row(waiting, None))
    assert run.to_dict()["tasks"]["load"]["pool"] == "wh"
    assert "pool" not in run.to_dict()["tasks"]["free"]
