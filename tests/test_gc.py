"""Retention: ``nborch gc`` and ``nborch scheduler --gc-older-than`` delete old runs with their
folders, keep running ones, and say what they freed; real processes, a real store."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nborch, run_json, start_scheduler, wait_for_line, write_pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nborch.core.sizes import human

BLOB = 200_000  # bytes of the artifact each run writes


def command_pipeline(workdir: Path, name: str = "etl") -> Path:
    """A command task that writes an artifact and exits with ``-p code=N``."""
    script = (f'mkdir -p "$NBORCH_ARTIFACT_DIR" && head -c {BLOB} /dev/zero > '
              '"$NBORCH_ARTIFACT_DIR/blob" && exit {{ params.code }}')
    return write_pipeline(workdir, {"name": name, "parameters": {"code": 0},
                                    "tasks": {"work": {"command": ["sh", "-c", script]}}},
                          name=f"{name}.yaml")


def run_once(workdir: Path, path: Path, code: int = 0) -> str:
    proc = nborch("run", str(path), "-p", f"code={code}", "--json", cwd=workdir)
    assert proc.returncode == (0 if code == 0 else 1), proc.stderr
    return run_json(proc)["run_id"]


def age(workdir: Path, *run_ids: str, ended: str = "2020-01-01T00:00:00.000+00:00") -> None:
    """Make runs old: their record says they ended in 2020."""
    with sqlite3.connect(workdir / ".nborch" / "nborch.db") as db:
        db.executemany("UPDATE runs SET started_at = ?, ended_at = ? WHERE run_id = ?",
                       [(ended, ended, r) for r in run_ids])


def rows_of(workdir: Path, run_id: str) -> int:
    with sqlite3.connect(workdir / ".nborch" / "nborch.db") as db:
        return sum(db.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?", (run_id,))
                   .fetchone()[0] for t in ("runs", "task_runs", "attempts"))


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def start_hanging(workdir: Path) -> tuple[subprocess.Popen, str]:
    """``nborch run`` of a command that hangs, once it runs; with its run id."""
    started = workdir / "started"
    path = write_pipeline(workdir, {"name": "hangs", "tasks": {"hang": {"command": [
        "sh", "-c", f"touch {started} && sleep 300"]}}}, name="hangs.yaml")
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", str(path)], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    [row] = [r for r in run_json(nborch("runs", "--json", cwd=workdir, check=True))
             if r["pipeline"] == "hangs"]
    return proc, row["run_id"]


def test_gc_deletes_old_runs_with_their_folders_and_nothing_else(workdir: Path):
    path = command_pipeline(workdir)
    old_ok = [run_once(workdir, path) for _ in range(2)]
    old_failed = run_once(workdir, path, code=3)
    recent = run_once(workdir, path)
    age(workdir, *old_ok, old_failed)
    runs = workdir / ".nborch" / "runs"
    sizes = {r: size_of(runs / r) for r in (*old_ok, old_failed, recent)}
    assert all(size >= BLOB for size in sizes.values())  # the artifact is in the run's folder
    hanging, running = start_hanging(workdir)
    try:
        age(workdir, running)  # started long ago, still running: never collected
        with sqlite3.connect(workdir / ".nborch" / "nborch.db") as db:
            db.execute("UPDATE runs SET ended_at = NULL WHERE run_id = ?", (running,))

        dry = nborch("gc", "--older-than", "30d", "--dry-run", cwd=workdir, check=True)
        assert sorted(dry.stdout.split()[:3]) == sorted([*old_ok, old_failed])
        freed = sum(sizes[r] for r in (*old_ok, old_failed))
        assert "would delete 3 runs that ended before " in dry.stdout
        assert f"{human(freed)} would be freed (dry run)" in dry.stdout
        assert all((runs / r).is_dir() and rows_of(workdir, r) for r in sizes)

        kept = run_json(nborch("gc", "--older-than", "30d", "--keep-failed", "--json",
                               cwd=workdir, check=True))
        assert sorted(kept["run_ids"]) == sorted(old_ok) and not kept["dry_run"]
        assert kept["bytes_freed"] == sum(sizes[r] for r in old_ok)
        for run_id in old_ok:  # rows, notebooks, logs, artifacts: all gone
            assert not (runs / run_id).exists() and rows_of(workdir, run_id) == 0
        assert (runs / old_failed / "artifacts" / "work" / "blob").stat().st_size == BLOB

        rest = nborch("gc", "--older-than", "30d", cwd=workdir, check=True)
        assert "deleted 1 run that ended before " in rest.stdout
        assert f"{human(sizes[old_failed])} freed" in rest.stdout
        assert not (runs / old_failed).exists() and rows_of(workdir, old_failed) == 0
        listed = {r["run_id"]: r["status"]
                  for r in run_json(nborch("runs", "--json", cwd=workdir, check=True))}
        assert listed == {recent: "success", running: "running"}
        assert (runs / recent / "artifacts" / "work" / "blob").exists()
        assert (runs / running).is_dir()
        again = nborch("gc", "--older-than", "30d", cwd=workdir, check=True)
        assert "deleted 0 runs" in again.stdout
    finally:
        nborch("cancel", running, cwd=workdir)
        hanging.communicate(timeout=120)
    assert run_json(nborch("show", running, "--json", cwd=workdir, check=True))["status"] \
        == "cancelled"


@pytest.mark.parametrize("value", ["30 days", "3x", "1d-", "", "soon"])
def test_a_bad_duration_is_exit_2_and_deletes_nothing(workdir: Path, value: str):
    path = command_pipeline(workdir)
    run_id = run_once(workdir, path)
    age(workdir, run_id)
    for command in (["gc", "--older-than", value], ["scheduler", "--gc-older-than", value]):
        proc = nborch(*command, cwd=workdir, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert f"bad duration {value!r}" in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert rows_of(workdir, run_id) and (workdir / ".nborch" / "runs" / run_id).is_dir()


def test_the_scheduler_collects_old_runs_when_it_starts(workdir: Path):
    path = command_pipeline(workdir)
    old, recent = run_once(workdir, path), run_once(workdir, path)
    age(workdir, old)
    proc = start_scheduler(workdir, "--gc-older-than", "30d")
    try:
        line = wait_for_line(proc, "gc: ")[-1]
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "gc: deleted 1 run that ended before " in line and "freed" in line
    assert not (workdir / ".nborch" / "runs" / old).exists() and rows_of(workdir, old) == 0
    assert [r["run_id"] for r in run_json(nborch("runs", "--json", cwd=workdir, check=True))] \
        == [recent]


def test_notebooks_under_an_output_dir_are_kept_and_said(workdir: Path):
    path = command_pipeline(workdir)
    proc = nborch("run", str(path), "--output-dir", str(workdir / "out"), "--json", cwd=workdir,
                  check=True)
    run_id = run_json(proc)["run_id"]
    (workdir / "out" / run_id).mkdir(parents=True, exist_ok=True)
    (workdir / "out" / run_id / "kept.ipynb").write_text("{}")
    age(workdir, run_id)
    done = run_json(nborch("gc", "--older-than", "1d", "--json", cwd=workdir, check=True))
    assert (done["run_ids"], done["notebooks_kept_elsewhere"]) == ([run_id], [run_id])
    assert not (workdir / ".nborch" / "runs" / run_id).exists()
    assert (workdir / "out" / run_id / "kept.ipynb").exists()


DURATION_LIKE = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"-?[0-9]{1,14}(\.[0-9]{1,3})?\s?(ms|s|m|h|d|y|)", fullmatch=True),
    st.floats().map(str))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=DURATION_LIKE)
def test_any_older_than_text_is_a_count_or_exit_2_never_a_traceback(workdir: Path, text: str,
                                                                     monkeypatch, capsys):
    """``nborch gc --older-than=TEXT --dry-run`` through the command's own main: whatever the
    text, it lists (exit 0) or says in one line what a duration is (exit 2)."""
    from nborch.ui import cli
    home = workdir / "home"
    if not home.exists():
        path = command_pipeline(workdir)
        age(workdir, run_once(workdir, path))
        (workdir / ".nborch").rename(home)
    stdout = sys.stdout
    try:
        code = cli.main(["--home", str(home), "gc", f"--older-than={text}", "--dry-run"])
    finally:
        sys.stdout = stdout  # main guards stdout against a closed pipe
    out = capsys.readouterr()
    if code == 0:
        assert "would delete 1 run " in out.out or "would delete 0 runs " in out.out
    else:
        assert code == 2 and out.out == "", (text, out)
        assert out.err.startswith("nborch: error: --older-than: ") and out.err.count("\n") == 1
    assert len(list((home / "runs").iterdir())) == 1


def test_a_run_whose_process_died_long_ago_is_collected_and_dry_run_says_so(workdir: Path):
    """A run left 'running' by a process that died is crashed at its last heartbeat: a dry
    run lists it as the collection then deletes it."""
    import socket

    from nborch.core.events import RunStarted
    from nborch.store.store import Store
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = Store(workdir / ".nborch")
    at = "2020-01-01T00:00:00.000+00:00"
    store.record([RunStarted("dead", "p", at, at, {}, {}, None, dead.pid, socket.gethostname())])
    store.close()
    with sqlite3.connect(workdir / ".nborch" / "nborch.db") as db:
        db.execute("UPDATE runs SET heartbeat_at = 1577836800 WHERE run_id = 'dead'")
    (workdir / ".nborch" / "runs" / "dead").mkdir(parents=True)
    dry = nborch("gc", "--older-than", "30d", "--dry-run", cwd=workdir, check=True)
    assert dry.stdout.splitlines()[0] == "dead" and "would delete 1 run " in dry.stdout
    assert rows_of(workdir, "dead") == 1
    done = run_json(nborch("gc", "--older-than", "30d", "--json", cwd=workdir, check=True))
    assert done["run_ids"] == ["dead"] and rows_of(workdir, "dead") == 0
    assert not (workdir / ".nborch" / "runs" / "dead").exists()
