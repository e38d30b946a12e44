"""The run store under real faults: a disk that fills up mid-run (a small tmpfs), a
read-only copy of the home (a read-only bind mount). Tests run as root; without the right
to mount they are skipped with the reason."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import nborch, run_json, write_pipeline


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): this test "
                    "needs root and the right to mount a tmpfs / bind mount")


@contextmanager
def small_disk(path: Path, size: str = "4m"):
    path.mkdir()
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the returned file is what to delete for space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # down to the last free byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def gated_pipeline(folder: Path) -> Path:
    """Two command tasks that wait for ``gate`` (after marking they started): ``a`` then
    succeeds, ``b`` fails; ``c`` is downstream of ``b``. Nothing of it writes to the store's
    disk once started."""
    def waiter(name: str, code: int) -> dict:
        script = (f"import os, sys, time\nopen({str(folder / f'started-{name}')!r}, 'w').close()\n"
                  f"while not os.path.exists({str(folder / 'gate')!r}):\n    time.sleep(0.05)\n"
                  f"sys.exit({code})")
        return {"command": [sys.executable, "-c", script]}
    return write_pipeline(folder, {"name": "disk", "tasks": {
        "a": waiter("a", 0), "b": waiter("b", 3),
        "c": {"command": [sys.executable, "-c", "pass"], "upstream": ["b"]}}})


def _start(workdir: Path, home: Path, **env: str) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    return subprocess.Popen([sys.executable, "-m", "nborch", "--home", str(home), "run",
                             "pipeline.yaml"], cwd=workdir, env={**full, "PYTHONUNBUFFERED": "1",
                                                                 **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stderr_until(proc: subprocess.Popen, needle: str) -> list[str]:
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} never printed: {lines}")


TRUE_END = {"a": "success", "b": "failed", "c": "upstream_failed"}


def test_a_disk_full_mid_run_keeps_the_outcome_until_space_is_back(workdir: Path):
    gated_pipeline(workdir)
    with small_disk(workdir / "disk") as disk:
        home = disk / "home"
        proc = _start(workdir, home)
        try:
            _wait_for(lambda: all((workdir / f"started-{t}").exists() for t in "ab"),
                      "both tasks to start", proc)
            filler = fill(disk)
            (workdir / "gate").touch()  # the tasks end while nothing can be written
            seen = _stderr_until(proc, "waiting up to")  # the run is over, its end not recorded
            assert any("kept in memory" in line for line in seen), seen
            # The store still holds the run as running; nothing was recorded as crashed.
            assert run_json(nborch("--home", str(home), "runs", "--json", cwd=workdir,
                                   check=True))[0]["status"] == "running"
            filler.unlink()
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        err = "".join(seen) + err
        assert proc.returncode == 1, (out, err)  # the run failed (task b), nothing unrecorded
        assert "recorded late" in err and "Traceback" not in err, err
        shown = run_json(nborch("--home", str(home), "show", "latest", "--json", cwd=workdir,
                                check=True))
        assert shown["status"] == "failed"
        assert {n: t["status"] for n, t in shown["tasks"].items()} == TRUE_END
        assert shown["tasks"]["b"]["attempts"] == 1 and shown["tasks"]["a"]["ended_at"]


def test_a_disk_that_stays_full_is_reported_with_the_true_outcome(workdir: Path):
    gated_pipeline(workdir)
    with small_disk(workdir / "disk") as disk:
        home = disk / "home"
        proc = _start(workdir, home, NBORCH_STORE_WAIT="1s")
        _wait_for(lambda: all((workdir / f"started-{t}").exists() for t in "ab"),
                  "both tasks to start", proc)
        fill(disk)
        (workdir / "gate").touch()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert "StoreWriteFailed" in out, out  # the Run the CLI prints carries it too
        # It says what the store could not take: the true end of every task and the run.
        assert "could not record" in err and str(home / "nborch.db") in err, err
        for end in ("a success", "b failed", "c upstream_failed", "the run failed"):
            assert end in err, (end, err)


def test_ctrl_c_on_a_full_disk_does_not_claim_the_states_recorded(workdir: Path):
    """Cancelling while the store takes nothing: the command says the kernels stopped, not
    that the states were recorded, and says what the store lacks."""
    gated_pipeline(workdir)
    with small_disk(workdir / "disk") as disk:
        proc = _start(workdir, disk / "home", NBORCH_STORE_WAIT="1s")
        _wait_for(lambda: all((workdir / f"started-{t}").exists() for t in "ab"),
                  "both tasks to start", proc)
        fill(disk)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err  # as for any unrecorded end
    assert "cancelled: kernels stopped" in err and "states recorded" not in err, err
    assert "could not record" in err and "the run cancelled" in err, err


@contextmanager
def read_only_copy(home: Path, where: Path):
    """``home`` seen through a read-only bind mount at ``where``."""
    where.mkdir()
    _mount("--bind", str(home), str(where))
    try:
        _mount("-o", "remount,ro,bind", str(where))
        probe = where / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("the read-only bind mount is writable here")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_commands_work_on_a_read_only_copy_and_record_nothing(workdir: Path):
    from conftest import hanging_pipeline
    started = hanging_pipeline(workdir)
    home = workdir / ".nborch"
    # A run whose process died: reads show it crashed, but only a writer records that.
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", "pipeline.yaml"],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for(started.exists, "the task to start", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    copy = workdir / "copy"
    shutil.copytree(home, copy)  # as a backup would: the database and its WAL, if any
    with read_only_copy(copy, workdir / "ro") as ro:
        before = {p.name: p.stat().st_mtime_ns for p in ro.rglob("*")}
        runs = run_json(nborch("--home", str(ro), "runs", "--json", cwd=workdir, check=True))
        assert [r["status"] for r in runs] == ["crashed"]
        run_id = runs[0]["run_id"]
        shown = run_json(nborch("--home", str(ro), "show", run_id, "--json", cwd=workdir,
                                check=True))
        assert shown["status"] == "crashed"
        assert shown["tasks"]["hang"]["error"]["type"] == "OrchestratorDied"
        assert shown["tasks"]["later"]["status"] == "cancelled"
        for args in (["logs", run_id, "hang"], ["show", "latest"],
                     ["report", run_id, "-o", str(workdir / "r.html")]):
            done = nborch("--home", str(ro), *args, cwd=workdir)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
        assert {p.name: p.stat().st_mtime_ns for p in ro.rglob("*")} == before
        # A command that writes says it cannot, naming the file, and runs nothing.
        done = nborch("--home", str(ro), "run", "pipeline.yaml", cwd=workdir)
        assert done.returncode == 2 and "nothing was run" in done.stderr, done.stderr
    # Reads recorded nothing in the real store either; the next run records the crash.
    import sqlite3
    db = sqlite3.connect(f"file:{home / 'nborch.db'}?mode=ro", uri=True)
    assert db.execute("SELECT status FROM runs").fetchall() == [("running",)]
    db.close()
    (workdir / "quick.yaml").write_text(
        f"name: quick\ntasks:\n  q:\n    command: [{sys.executable!r}, -c, pass]\n")
    nborch("run", "quick.yaml", cwd=workdir, check=True)
    db = sqlite3.connect(f"file:{home / 'nborch.db'}?mode=ro", uri=True)
    assert db.execute("SELECT status FROM runs WHERE run_id = ?",
                      (run_id,)).fetchone() == ("crashed",)
    db.close()


def test_read_commands_work_on_a_full_disk(workdir: Path):
    (workdir / "p.yaml").write_text(
        f"name: quick\ntasks:\n  q:\n    command: [{sys.executable!r}, -c, pass]\n")
    with small_disk(workdir / "disk", "2m") as disk:
        home = disk / "home"
        nborch("--home", str(home), "run", "p.yaml", cwd=workdir, check=True)
        fill(disk)
        runs = nborch("--home", str(home), "runs", "--json", cwd=workdir)
        assert runs.returncode == 0, runs.stderr
        assert [r["status"] for r in run_json(runs)] == ["success"]
        shown = nborch("--home", str(home), "show", "latest", cwd=workdir)
        assert shown.returncode == 0 and "success" in shown.stdout, shown.stderr
        done = nborch("--home", str(home), "run", "p.yaml", cwd=workdir)
        assert done.returncode == 2 and "nothing was run" in done.stderr, done.stderr


def test_a_slow_listener_holds_up_neither_the_store_nor_another_thread():
    """The bus calls the store (a critical listener) under its lock and every other listener
    outside it: a view stuck in one event does not stop another thread's events from being
    recorded, and it still gets every event, in order."""
    import threading

    from nborch.core.events import EventBus
    bus, recorded, seen = EventBus(), [], []
    stuck, release = threading.Event(), threading.Event()

    def view(event):
        seen.append(event)
        if event == "first":
            stuck.set()
            release.wait(60)

    bus.subscribe(recorded.append, critical=True)
    bus.subscribe(view)
    first = threading.Thread(target=bus.emit, args=("first",))
    first.start()
    assert stuck.wait(60)
    second = threading.Thread(target=bus.emit, args=("second",))
    second.start()
    second.join(60)
    assert not second.is_alive(), "an emit waited for another thread's slow listener"
    assert recorded == ["first", "second"] and seen == ["first"]
    release.set()
    first.join(60)
    bus.flush()
    assert seen == ["first", "second"]
