"""Schedules, the scheduler process and backfill: real stores, real runs, real processes."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import (
    PUBLISH_WORKER,
    nborch,
    run_json,
    small_pipeline,
    start_scheduler,
    wait_for_line,
)

from nborch import Store
from nborch.core.errors import SpecError
from nborch.scheduling.scheduler import Scheduler
from nborch.scheduling.schedules import Schedule, check_cron, registered, slots

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# -- slots ----------------------------------------------------------------------------------

def test_daily_slot_is_neither_skipped_nor_doubled_across_dst_changes():
    spring = list(slots("30 2 * * *", BERLIN, utc(2026, 3, 27), utc(2026, 3, 31)))
    assert [s.isoformat() for s in spring] == [
        "2026-03-27T02:30:00+01:00", "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:30:00+02:00",  # 02:30 does not exist that night: the first time after
        "2026-03-30T02:30:00+02:00"]
    autumn = list(slots("30 2 * * *", BERLIN, utc(2026, 10, 23), utc(2026, 10, 27)))
    assert [s.isoformat() for s in autumn] == [
        "2026-10-23T02:30:00+02:00", "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",  # 02:30 happens twice that night: once is run
        "2026-10-26T02:30:00+01:00"]
    # A 06:00 run stays at 06:00 local time on both sides of a change.
    six = list(slots("0 6 * * *", BERLIN, utc(2026, 3, 28), utc(2026, 3, 30, 12)))
    assert [s.hour for s in six] == [6, 6, 6] and len({s.utcoffset() for s in six}) == 2


def test_due_slots_with_and_without_catchup():
    schedule = Schedule("p", "/x.yaml", "0 * * * *", "UTC", created_at="2026-01-01T00:30:00+00:00")
    now = utc(2026, 1, 1, 3, 10)
    assert [s.hour for s in schedule.due(now)] == [3]  # only the newest missed slot
    schedule.catchup = True
    assert [s.hour for s in schedule.due(now)] == [1, 2, 3]
    schedule.last_slot = "2026-01-01T02:00:00+00:00"
    assert [s.hour for s in schedule.due(now)] == [3]
    assert schedule.next_slot(now) == utc(2026, 1, 1, 4)


@pytest.mark.parametrize("expr", ["", "61 * * * *", "every day", "* * *", 5])
def test_bad_cron_expressions_are_rejected(expr):
    with pytest.raises(SpecError, match="bad cron expression"):
        check_cron(expr)


# -- the schedule commands ------------------------------------------------------------------

def test_schedule_add_list_pause_resume_remove(workdir: Path):
    path = small_pipeline(workdir, schedule={"cron": "0 6 * * *", "timezone": "Europe/Berlin"})
    added = nborch("schedule", "add", str(path), cwd=workdir, check=True)
    assert "added the schedule of nightly" in added.stdout
    [row] = json.loads(nborch("schedule", "list", "--json", cwd=workdir, check=True).stdout)
    assert {k: row[k] for k in ("pipeline", "cron", "timezone", "paused")} == {
        "pipeline": "nightly", "cron": "0 6 * * *", "timezone": "Europe/Berlin", "paused": False}
    next_run = datetime.fromisoformat(row["next_run"])
    assert (next_run.hour, next_run.minute) == (6, 0)  # in the schedule's zone, with its offset
    assert next_run.utcoffset() == next_run.astimezone(BERLIN).utcoffset()
    assert next_run > datetime.now(timezone.utc)
    # --cron and --timezone override the file's schedule; adding again replaces.
    nborch("schedule", "add", str(path), "--cron", "15 7 * * 1-5", "--timezone", "UTC",
           "--max-active-runs", "2", cwd=workdir, check=True)
    nborch("schedule", "pause", "nightly", cwd=workdir, check=True)
    [row] = json.loads(nborch("schedule", "list", "--json", cwd=workdir, check=True).stdout)
    assert (row["cron"], row["timezone"], row["paused"], row["next_run"],
            row["max_active_runs"]) == ("15 7 * * 1-5", "UTC", True, None, 2)
    # Adding it again updates it and keeps its progress (and its pause), unless --start.
    Store(workdir / ".nborch").update_schedule("nightly", last_slot="2026-03-02T07:15:00+00:00")
    again = nborch("schedule", "add", str(path), "--cron", "30 7 * * 1-5", cwd=workdir,
                   check=True)
    assert "updated the schedule of nightly (its progress kept" in again.stdout
    [row] = json.loads(nborch("schedule", "list", "--json", cwd=workdir, check=True).stdout)
    assert (row["cron"], row["paused"], row["last_slot"]) == (
        "30 7 * * 1-5", True, "2026-03-02T07:15:00+00:00")
    nborch("schedule", "add", str(path), "--start", "2026-04-01", cwd=workdir, check=True)
    [row] = json.loads(nborch("schedule", "list", "--json", cwd=workdir, check=True).stdout)
    assert (row["paused"], row["last_slot"]) == (False, None)
    nborch("schedule", "pause", "nightly", cwd=workdir, check=True)
    nborch("schedule", "resume", "nightly", cwd=workdir, check=True)
    assert "next" in nborch("schedule", "list", cwd=workdir, check=True).stdout
    nborch("schedule", "remove", "nightly", cwd=workdir, check=True)
    assert json.loads(nborch("schedule", "list", "--json", cwd=workdir, check=True).stdout) == []
    missing = nborch("schedule", "pause", "nightly", cwd=workdir)
    assert missing.returncode == 1 and "no schedule for pipeline 'nightly'" in missing.stderr


@pytest.mark.parametrize("args, message", [
    (["--cron", "61 * * * *"], "bad cron expression '61 * * * *'"),
    (["--cron", "0 6 * * *", "--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
    ([], "no cron expression"),
    (["--cron", "0 6 * * *", "--max-active-runs", "0"], "max_active_runs must be"),
    (["--cron", "0 6 * * *", "--start", "yesterday"], "--start 'yesterday'"),
])
def test_bad_schedules_are_clear_errors_and_record_nothing(workdir: Path, args, message):
    path = small_pipeline(workdir)
    proc = nborch("schedule", "add", str(path), *args, cwd=workdir)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert registered(Store(workdir / ".nborch")) == []


# -- the scheduler ----------------------------------------------------------------------------

def test_scheduler_tick_honours_catchup_max_active_runs_and_pause(workdir: Path):
    gate = workdir / "gate"
    path = small_pipeline(workdir, body=f"import os, time\nwhile not os.path.exists("
                                        f"{str(gate)!r}):\n    time.sleep(0.05)")
    nborch("schedule", "add", str(path), "--cron", "0 6 * * *", "--catchup",
           "--max-active-runs", "2", "--start", "2026-01-01", cwd=workdir, check=True)
    scheduler = Scheduler(workdir / ".nborch", say=lambda text: None)
    now = utc(2026, 1, 3, 12)  # three slots are due: Jan 1, 2 and 3 at 06:00 UTC
    first = scheduler.tick(now)
    assert len(first) == 2  # max_active_runs
    assert scheduler.tick(now) == []  # both still running: the third slot waits
    gate.touch()
    runs = [scheduler.handles[r].wait(120) for r in first]
    assert [r.logical_date for r in runs] == ["2026-01-01T06:00:00+00:00",
                                              "2026-01-02T06:00:00+00:00"]
    assert [r.values["job"]["day"] for r in runs] == ["2026-01-01", "2026-01-02"]
    store = Store(workdir / ".nborch")
    store.update_schedule("nightly", paused=True)  # a change by another process
    assert scheduler.tick(now) == []
    store.update_schedule("nightly", paused=False)
    [third] = scheduler.tick(now)
    assert scheduler.handles[third].wait(120).logical_date == "2026-01-03T06:00:00+00:00"
    assert scheduler.tick(now) == []  # nothing is started twice
    assert registered(store)[0].last_slot == "2026-01-03T06:00:00+00:00"


def test_scheduler_process_runs_due_slots_is_alone_and_stops_on_sigterm(workdir: Path):
    gate = workdir / "gate"
    path = small_pipeline(workdir, body=f"import os, time\nwhile not os.path.exists("
                                        f"{str(gate)!r}):\n    time.sleep(0.05)")
    start = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    nborch("schedule", "add", str(path), "--cron", "* * * * *", "--catchup",
           "--start", start.isoformat(), cwd=workdir, check=True)
    proc = start_scheduler(workdir, "--grace", "60s")
    try:
        lines = wait_for_line(proc, "started for")
        run_id = lines[-1].split("run ")[1].split()[0]
        # Each line says when (a scheduler's output is read days later, in a journal).
        assert all(datetime.fromisoformat(line.split()[0]) for line in lines)
        # A second scheduler on the same store is refused while the first one lives.
        second = nborch("scheduler", cwd=workdir, timeout=60)
        assert second.returncode == 2 and "another scheduler is already active" in second.stderr
        # The run is visible to other commands while it runs.
        assert run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))["status"] \
            == "running"
        proc.send_signal(signal.SIGTERM)
        wait_for_line(proc, "waiting up to 60s for 1 running run")
        gate.touch()  # the run may finish within the grace period
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "scheduler stopped: every run finished" in out
    shown = run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))
    assert shown["status"] == "success" and shown["logical_date"] == start.isoformat()


def test_sigterm_cancels_what_outlives_the_grace_period(workdir: Path):
    path = small_pipeline(workdir, body="import time\ntime.sleep(600)")
    start = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    nborch("schedule", "add", str(path), "--cron", "* * * * *", "--start", start.isoformat(),
           cwd=workdir, check=True)
    proc = start_scheduler(workdir, "--grace", "1s")
    try:
        run_id = wait_for_line(proc, "started for")[-1].split("run ")[1].split()[0]
        deadline = time.monotonic() + 120
        while Store(workdir / ".nborch").get_run(run_id).tasks["after"].status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"cancelled 1 run(s) still running after the grace period ({run_id})" in out
    run = Store(workdir / ".nborch").get_run(run_id)
    assert (run.status, run.tasks["job"].status, run.tasks["after"].status) == \
        ("cancelled", "success", "cancelled")


def test_scheduler_status_with_and_without_a_scheduler(workdir: Path):
    path = small_pipeline(workdir, schedule={"cron": "0 6 * * *", "timezone": "Europe/Berlin",
                                             "sla": "1h"})
    nborch("schedule", "add", str(path), cwd=workdir, check=True)
    [listed] = json.loads(nborch("schedule", "list", "--json", cwd=workdir, check=True).stdout)
    idle = run_json(nborch("scheduler", "status", "--json", cwd=workdir, check=True))
    assert idle["scheduler"] == {"running": False, "pid": None, "host": None, "since": None}
    [row] = idle["schedules"]
    assert (row["pipeline"], row["next_slot"], row["sla"]) == ("nightly", listed["next_run"],
                                                                3600.0)
    text = nborch("scheduler", "status", cwd=workdir, check=True).stdout
    assert "scheduler: not running" in text and f"next slot {listed['next_run']}" in text
    proc = start_scheduler(workdir)
    try:
        wait_for_line(proc, "scheduler active")
        held = run_json(nborch("scheduler", "status", "--json", cwd=workdir, check=True))
        assert held["scheduler"]["running"] and held["scheduler"]["pid"] == proc.pid
        since = datetime.fromisoformat(held["scheduler"]["since"])
        assert since <= datetime.now(timezone.utc)
        assert held["schedules"] == idle["schedules"]
        text = nborch("scheduler", "status", cwd=workdir, check=True).stdout
        assert f"scheduler: running (pid {proc.pid} on " in text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    after = run_json(nborch("scheduler", "status", "--json", cwd=workdir, check=True))
    assert after["scheduler"]["running"] is False


# -- backfill -----------------------------------------------------------------------------------

def test_backfill_runs_each_slot_oldest_first_and_skips_successes(workdir: Path):
    path = small_pipeline(workdir, schedule={"cron": "0 6 * * *", "timezone": "Europe/Berlin"})
    proc = nborch("backfill", str(path), "--start", "2026-03-28", "--end", "2026-03-30",
                  "--max-parallel-runs", "2", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    runs = sorted(run_json(nborch("runs", "--json", cwd=workdir, check=True)),
                  key=lambda r: r["started_at"])
    shown = [run_json(nborch("show", r["run_id"], "--json", cwd=workdir, check=True)) for r in runs]
    assert [s["logical_date"] for s in shown] == [  # both ends included, oldest first
        "2026-03-28T06:00:00+01:00", "2026-03-29T06:00:00+02:00", "2026-03-30T06:00:00+02:00"]
    assert [s["tasks"]["job"]["values"]["day"] for s in shown] == [
        "2026-03-28", "2026-03-29", "2026-03-30"]
    again = nborch("backfill", str(path), "--start", "2026-03-29", "--end", "2026-03-31",
                   cwd=workdir, check=True)
    assert again.stdout.count("already succeeded, skipped") == 2
    assert len(run_json(nborch("runs", "--json", cwd=workdir, check=True))) == 4
    nborch("backfill", str(path), "--start", "2026-03-29", "--end", "2026-03-29", "--rerun",
           cwd=workdir, check=True)
    assert len(run_json(nborch("runs", "--json", cwd=workdir, check=True))) == 5
    bad = nborch("backfill", str(path), "--start", "2026-03-30", "--end", "2026-03-29", cwd=workdir)
    assert bad.returncode == 2 and "is before --start" in bad.stderr


# -- where scheduled runs go ---------------------------------------------------------------------

# The kernel of a task on a Dask worker runs under the worker process.
PUBLISH_PARENT = PUBLISH_WORKER.replace("'worker_pid'", "'parent'")


@pytest.fixture(scope="module")
def dask_cluster():
    """A Dask scheduler and one worker process on 127.0.0.1: the address and the worker's pid."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        [pid] = client.run(os.getpid).values()
        yield cluster.scheduler_address.removeprefix("tcp://"), pid


def test_a_scheduled_slot_runs_on_the_executor_its_file_names(workdir: Path, dask_cluster):
    address, worker = dask_cluster
    path = small_pipeline(workdir, body=PUBLISH_PARENT, executor=f"dask://{address}")
    start = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    nborch("schedule", "add", str(path), "--cron", "* * * * *", "--start", start.isoformat(),
           cwd=workdir, check=True)
    proc = start_scheduler(workdir)
    try:
        run_id = wait_for_line(proc, "started for")[-1].split("run ")[1].split()[0]
        wait_for_line(proc, f"run {run_id} ended")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    run = run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))
    assert run["status"] == "success", run
    assert run["tasks"]["after"]["values"]["parent"] == worker


def test_backfill_executor_wins_over_the_file_and_bad_ones_are_refused(workdir: Path,
                                                                        dask_cluster):
    address, worker = dask_cluster
    path = small_pipeline(workdir, body=PUBLISH_PARENT, executor=f"dask://{address}",
                          schedule={"cron": "0 6 * * *"})
    nborch("backfill", str(path), "--start", "2026-03-01", "--end", "2026-03-01", cwd=workdir,
           check=True)
    nborch("backfill", str(path), "--start", "2026-03-02", "--end", "2026-03-02",
           "--executor", "local", cwd=workdir, check=True)
    parents = {}
    for listed in run_json(nborch("runs", "--json", cwd=workdir, check=True)):
        run = run_json(nborch("show", listed["run_id"], "--json", cwd=workdir, check=True))
        parents[run["tasks"]["job"]["values"]["day"]] = run["tasks"]["after"]["values"]["parent"]
    assert parents["2026-03-01"] == worker  # the file's executor
    assert parents["2026-03-02"] != worker  # the command line's
    for command in (["backfill", str(path), "--start", "2026-03-03", "--end", "2026-03-03"],
                    ["scheduler"]):
        bad = nborch(*command, "--executor", "k8s://cluster", cwd=workdir)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert "unknown executor 'k8s'; use one of local, dask" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert len(run_json(nborch("runs", "--json", cwd=workdir, check=True))) == 2
