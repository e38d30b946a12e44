"""A real scheduler process left running: slots that cannot start and runs that crashed are
recorded and alerted (a real HTTP server receives the hooks), and 200 runs later it holds
no more files or memory than after the first few."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
from conftest import (
    Receiver,
    nborch,
    run_json,
    start_scheduler,
    wait_for_line,
    wait_until,
    write_pipeline,
)


def _minutes_ago(minutes: int) -> str:
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    return (now - timedelta(minutes=minutes)).isoformat()


def test_a_slot_that_cannot_start_and_a_crashed_run_are_recorded_and_alerted(workdir: Path):
    receiver = Receiver()
    gate = workdir / "gate"
    started = workdir / "started"
    wait = (f"import os, time\nopen({str(started)!r}, 'w').close()\n"
            f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)")
    broken = {"name": "broken", "on_failure": [{"webhook": receiver.url("/broken")}],
              "tasks": {"t": {"command": [sys.executable, "-c", "pass"]}}}
    write_pipeline(workdir, broken, "broken.yaml")
    write_pipeline(workdir, {"name": "crashy", "on_failure": [{"webhook": receiver.url("/crashy")}],
                             "tasks": {"t": {"command": [sys.executable, "-c", wait]}}},
                   "crashy.yaml")
    nborch("schedule", "add", "broken.yaml", "--cron", "* * * * *", "--start", _minutes_ago(1),
           cwd=workdir, check=True)
    nborch("schedule", "add", "crashy.yaml", "--cron", "0 0 1 1 *", cwd=workdir, check=True)
    # After it was scheduled, the pipeline stops validating: its task needs a secret now.
    broken["tasks"]["t"]["secrets"] = ["NBORCH_TEST_MISSING_TOKEN"]
    write_pipeline(workdir, broken, "broken.yaml")
    # A run of the other pipeline whose process is killed outright.
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    victim = subprocess.Popen([sys.executable, "-m", "nborch", "run", "crashy.yaml"],
                              cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    crashed_id = victim.stdout.readline().split()[1]
    wait_until(started.exists, "the task to start")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    gate.touch()  # the command the killed run left behind ends

    proc = start_scheduler(workdir, "--grace", "30s")
    try:
        lines = wait_for_line(proc, "not started")
        wait_until(lambda: receiver.answered("/broken") and receiver.answered("/crashy"),
                  "both alerts")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    lines += out.splitlines()
    assert any(f"run {crashed_id} crashed" in line for line in lines), lines

    [alert] = receiver.answered("/broken")
    assert (alert["hook"], alert["status"], alert["reason"]) == ("on_failure", "failed",
                                                                 "not_started")
    assert "NBORCH_TEST_MISSING_TOKEN" in alert["error"]["message"]
    shown = run_json(nborch("show", alert["run_id"], "--json", cwd=workdir, check=True))
    assert shown["status"] == "failed" and shown["pipeline"] == "broken"
    assert shown["error"] == {**alert["error"], "cell": None, "cell_source": None,
                              "traceback": None}
    assert shown["logical_date"] == _slot_of(lines)
    assert shown["trigger"] == alert["trigger"] == "schedule"  # a slot, though it never ran

    [alert] = receiver.answered("/crashy")
    assert (alert["hook"], alert["status"], alert["reason"], alert["run_id"]) == (
        "on_failure", "crashed", "crashed", crashed_id)
    assert alert["failed_tasks"][0]["error"]["type"] == "OrchestratorDied"
    # Told once: a second scheduler does not alert again.
    proc = start_scheduler(workdir)
    try:
        wait_for_line(proc, "scheduler active")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert len(receiver.answered("/crashy")) == 1
    receiver.server.shutdown()


def _slot_of(lines: list[str]) -> str:
    [line] = [line for line in lines if "not started" in line]
    return line.split("slot ")[1].split()[0]


def test_a_scheduler_starting_200_runs_holds_bounded_files_and_memory(workdir: Path):
    """Catch-up of 200 missed slots, one run at a time: after warming up, the scheduler's
    open files stay flat and its memory stops growing."""
    write_pipeline(workdir, {"name": "many", "tasks": {"t": {"command": ["true"]}}})
    nborch("schedule", "add", "pipeline.yaml", "--cron", "* * * * *", "--catchup",
           "--start", _minutes_ago(199), cwd=workdir, check=True)
    proc = start_scheduler(workdir)
    me = psutil.Process(proc.pid)
    samples, ended = [], 0
    try:
        for line in proc.stdout:
            if " ended: " in line:
                assert " ended: success" in line, line
                ended += 1
                if ended % 20 == 0:
                    samples.append((ended, me.num_fds(), me.memory_info().rss))
                if ended >= 200:
                    break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert ended >= 200 and proc.returncode == 0, err
    print("runs, open files, rss:", samples)
    warm_fds = samples[1][1]  # after 40 runs
    assert max(fds for _, fds, _ in samples[2:]) <= warm_fds + 8, samples
    half = {n: rss for n, _, rss in samples}
    assert half[200] - half[100] < 8 << 20, samples  # not growing with the runs
    assert run_json(nborch("runs", "--json", "--limit", "500", cwd=workdir, check=True))
