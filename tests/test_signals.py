"""Real signals to a real ``nborch run``: SIGTERM and SIGHUP cancel as Ctrl-C does; a
reader that closes the pipe early is not an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import nborch, run_json, start_hanging_run, write_notebook, write_pipeline


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_cancels_the_run_like_ctrl_c(workdir: Path, signum: int):
    proc = start_hanging_run(workdir)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the run started no kernel"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "cancelled: kernels stopped, states recorded" in err and "Traceback" not in err
    [run] = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    shown = run_json(nborch("show", run["run_id"], "--json", cwd=workdir, check=True))
    assert shown["status"] == "cancelled"
    assert {t["status"] for t in shown["tasks"].values()} == {"cancelled"}
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, alive


def test_a_second_signal_stops_at_once(workdir: Path):
    proc = start_hanging_run(workdir)
    # Stop the kernel from being killed quickly: the first SIGTERM starts a cancel, the second
    # must end the process whatever the cancel is doing.
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode in (128 + signal.SIGTERM, -signal.SIGTERM)


def test_a_closed_pipe_is_not_an_error(workdir: Path):
    write_notebook(workdir / "a.ipynb", "for i in range(3000):\n    print('x' * 100)")
    write_pipeline(workdir, {"name": "many", "tasks": {
        f"t{i}": {"notebook": "a.ipynb"} for i in range(12)}})
    run_id = run_json(nborch("run", "pipeline.yaml", "--json", cwd=workdir, check=True))["run_id"]
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    # 300 KB of log: more than a pipe holds, so nborch is still writing when the reader goes.
    for args in (["logs", run_id, "t0"], ["show", run_id], ["runs"]):
        # The reader takes one line, then closes the pipe while nborch still writes.
        shell = f"{sys.executable} -m nborch {' '.join(args)} | head -c 20 >/dev/null; " \
                "echo \"exit=${PIPESTATUS[0]}\""
        done = subprocess.run(["bash", "-c", shell], cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=120)
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
        assert "exit=0" in done.stdout, (args, done.stdout, done.stderr)


def test_a_process_starting_many_runs_holds_no_file_or_thread_per_run(workdir: Path):
    """A scheduler or a notebook starts runs for months: after warming up, open files and
    threads stay flat (each run's store connection, zmq context and event loop are freed
    when it ends, not when the garbage collector gets round to them)."""
    import gc

    from nborch import Pipeline
    write_notebook(workdir / "a.ipynb", "x = 1")
    pipeline = Pipeline("many_runs", root=workdir)
    pipeline.notebook("a.ipynb", name="a")
    me = psutil.Process()
    gc.disable()  # what is freed must be freed by nborch, not by a collection
    try:
        seen = []
        for _ in range(24):
            assert pipeline.run(home=workdir / ".nborch").status == "success"
            seen.append((me.num_fds(), me.num_threads()))
    finally:
        gc.enable()
    warm = seen[3]
    assert max(fds for fds, _ in seen[4:]) <= warm[0] + 2, seen
    assert max(threads for _, threads in seen[4:]) <= warm[1] + 2, seen


def test_two_hundred_runs_in_one_process_hold_flat_files_threads_and_memory(workdir: Path):
    """The issue's 200 runs through one Python process (a notebook server, a script that
    runs a pipeline in a loop): command tasks, so the test measures nborch, not kernels."""
    from nborch import Pipeline
    pipeline = Pipeline("loop", root=workdir)
    first = pipeline.command(["true"], name="first")
    pipeline.command(["true"], name="second", upstream=[first])
    me = psutil.Process()
    seen = []
    for _ in range(200):
        assert pipeline.run(home=workdir / ".nborch").status == "success"
        seen.append((me.num_fds(), me.num_threads(), me.memory_info().rss))
    fds, threads, rss = zip(*seen[20:])
    assert max(fds) <= fds[0] + 2 and max(threads) <= threads[0] + 2, seen[20::20]
    assert rss[-1] - rss[0] < 10 * 2**20, [r // 2**20 for r in rss[::20]]  # MB, every 20 runs


@pytest.mark.parametrize("damage", ["garbage", "truncated", "home_is_a_file"])
def test_a_store_that_cannot_record_stops_the_run_before_it_starts(workdir: Path, damage: str):
    write_notebook(workdir / "a.ipynb", f"open({str(workdir / 'ran')!r}, 'w').close()")
    write_pipeline(workdir, {"name": "rec", "tasks": {"a": {"notebook": "a.ipynb"}}})
    home = workdir / ".nborch"
    if damage == "home_is_a_file":
        home.write_text("not a folder")
    else:
        for _ in range(3):  # a store with some runs in it
            nborch("run", "pipeline.yaml", cwd=workdir, check=True)
        (workdir / "ran").unlink()
        db = home / "nborch.db"
        data = db.read_bytes()
        db.write_bytes(os.urandom(len(data)) if damage == "garbage" else data[:len(data) // 2])
        for extra in ("nborch.db-wal", "nborch.db-shm"):
            (home / extra).unlink(missing_ok=True)
    proc = nborch("run", "pipeline.yaml", cwd=workdir)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "nothing was run" in proc.stderr \
        or "is a file" in proc.stderr, proc.stderr
    assert str(home) in proc.stderr or ".nborch" in proc.stderr
    assert not (workdir / "ran").exists(), "the task ran unrecorded"
    if damage == "home_is_a_file":  # read commands say so too
        proc = nborch("runs", cwd=workdir)
        assert proc.returncode == 2 and "is a file" in proc.stderr, proc.stderr
