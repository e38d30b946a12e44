"""SLAs: a slot whose run has not succeeded ``sla`` after it fires ``on_sla_miss`` once,
whether it never started or is still running, also across a scheduler restart (a real
scheduler process, a real store, a real HTTP server receiving the hooks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import nborch, start_scheduler, wait_for_line, wait_until, write_pipeline

from nborch import Store
from nborch.core.events import RunEnded, RunStarted
from nborch.scheduling import sla
from nborch.scheduling.schedules import Schedule


def _today() -> datetime:
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def test_a_slot_never_started_and_a_slot_still_running_each_alert_once_across_a_restart(
        workdir: Path, receiver):
    today = _today()
    yesterday = today - timedelta(days=1)
    hang = "import time\ntime.sleep(600)"
    write_pipeline(workdir, {
        "name": "daily", "schedule": {"cron": "0 0 * * *", "sla": "2s"},
        "on_sla_miss": [{"webhook": receiver.url("/sla")}],
        "tasks": {"t": {"command": [sys.executable, "-c", hang]}}}, "daily.yaml")
    # Registered since yesterday: yesterday's slot is missed (no catch-up: it never starts),
    # today's starts and hangs past its SLA.
    nborch("schedule", "add", "daily.yaml", "--start", yesterday.isoformat(), cwd=workdir,
           check=True)
    proc = start_scheduler(workdir, "--grace", "1s")
    try:
        wait_until(lambda: len(receiver.answered("/sla")) >= 2, "two SLA alerts")
        lines = wait_for_line(proc, "missed its SLA")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    alerts = sorted(receiver.answered("/sla"), key=lambda a: a["logical_date"])
    assert [a["logical_date"] for a in alerts] == [yesterday.isoformat(), today.isoformat()]
    never, late = alerts
    assert (never["hook"], never["pipeline"], never["reason"], never["sla"]) == (
        "on_sla_miss", "daily", "sla_miss", 2.0)
    assert (never["run_id"], never["status"]) == (None, None)
    assert late["run_id"] and late["status"] == "running"
    assert datetime.fromisoformat(late["deadline"]) == today + timedelta(seconds=2)
    assert any("missed its SLA" in line for line in lines + out.splitlines())

    # Restarted (the hanging run was cancelled when it stopped): nothing fires again. The
    # restart's first tick starts a run of another pipeline, then judges SLAs; stopping it
    # waits for any alert it sent.
    write_pipeline(workdir, {"name": "marker", "tasks": {"t": {"command": ["true"]}}},
                   "marker.yaml")
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    nborch("schedule", "add", "marker.yaml", "--cron", "* * * * *", "--start",
           (minute - timedelta(minutes=1)).isoformat(), cwd=workdir, check=True)
    proc = start_scheduler(workdir, "--grace", "30s")
    try:
        wait_for_line(proc, "marker: run")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "missed its SLA" not in out
    assert len(receiver.answered("/sla")) == 2
    misses = Store(workdir / ".nborch").sla_misses("daily")
    assert [(m["slot"], m["status"]) for m in misses] == [
        (yesterday.isoformat(), None), (today.isoformat(), "running")]


def _record(store: Store, run_id: str, slot: datetime, status: str, ended: datetime) -> None:
    started = RunStarted(run_id, "p", slot.isoformat(), slot.isoformat(), {}, {}, None,
                         os.getpid(), socket.gethostname())
    store.record([started, RunEnded(run_id, status, ended.isoformat())])


def test_each_slot_is_judged_once_by_its_deadline(workdir: Path):
    """On a real store, with the clock given: a success within the SLA is no miss; a late
    success, a failure and no run are; a paused schedule's slots are never late."""
    store = Store(workdir / ".nborch")
    day = datetime(2026, 1, 1, tzinfo=timezone.utc)
    schedule = Schedule("p", str(workdir / "p.yaml"), "0 * * * *", "UTC", sla=600,
                        created_at=(day - timedelta(seconds=1)).isoformat())
    store.save_schedule(schedule)
    slot = [day + timedelta(hours=h) for h in range(5)]
    _record(store, "in-time", slot[0], "success", slot[0] + timedelta(minutes=9))
    _record(store, "late", slot[1], "success", slot[1] + timedelta(minutes=11))
    _record(store, "failed", slot[2], "failed", slot[2] + timedelta(minutes=1))
    alerted = []

    def judge(now: datetime) -> list[str]:
        [saved] = [s for s in _schedules(store) if s.pipeline == "p"]
        return [m.slot.isoformat() for m in sla.judge(store, saved, now, alerted.append)]

    assert judge(slot[3] + timedelta(minutes=9)) == [s.isoformat() for s in slot[1:3]]
    assert judge(slot[3] + timedelta(minutes=10)) == [slot[3].isoformat()]  # no run at all
    assert judge(slot[3] + timedelta(minutes=30)) == []  # each slot judged once
    assert [m.run["run_id"] if m.run else None for m in alerted] == ["late", "failed", None]
    store.update_schedule("p", paused=True)  # 04:00 to 09:00 pass paused
    assert judge(day + timedelta(hours=9, minutes=20)) == []
    store.update_schedule("p", paused=False)
    assert judge(day + timedelta(hours=9, minutes=30)) == []  # the pause was not late
    assert judge(day + timedelta(hours=10, minutes=10)) == [
        (day + timedelta(hours=10)).isoformat()]


def _schedules(store: Store) -> list[Schedule]:
    from nborch.scheduling.schedules import registered
    return registered(store)


def test_bad_slas_are_exit_2_and_record_nothing(workdir: Path):
    write_pipeline(workdir, {"name": "p", "schedule": {"cron": "0 6 * * *", "sla": "soon"},
                             "tasks": {"t": {"command": ["true"]}}})
    proc = nborch("schedule", "add", "pipeline.yaml", cwd=workdir)
    assert proc.returncode == 2 and "sla: bad duration 'soon'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    write_pipeline(workdir, {"name": "p", "schedule": {"cron": "0 6 * * *"},
                             "tasks": {"t": {"command": ["true"],
                                             "on_sla_miss": [{"command": ["true"]}]}}})
    proc = nborch("schedule", "add", "pipeline.yaml", "--sla", "1h", cwd=workdir)
    assert proc.returncode == 2 and "'on_sla_miss'" in proc.stderr and \
        "declare it at the pipeline's top level" in proc.stderr, proc.stderr
    write_pipeline(workdir, {"name": "p", "on_sla_mis": [], "tasks": {"t": {"command": ["true"]}}})
    proc = nborch("schedule", "add", "pipeline.yaml", "--cron", "0 6 * * *", cwd=workdir)
    assert proc.returncode == 2 and "did you mean 'on_sla_miss'?" in proc.stderr, proc.stderr
    assert Store(workdir / ".nborch").schedule_records() == []


def test_a_command_hook_hears_of_a_slot_with_no_run(tmp_path: Path):
    from nborch.core.hooks import Hook
    from nborch.runtime.hooks import email_text, send, sla_payload
    data = sla_payload("daily", "2026-01-01T06:00:00+01:00", 3600.0,
                       "2026-01-01T07:00:00+01:00", None)
    out = tmp_path / "env.json"
    dump = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    send(Hook("command", [sys.executable, "-c", dump, str(out)]), data, {})
    env = json.loads(out.read_text())
    assert (env["NBORCH_HOOK"], env["NBORCH_PIPELINE"], env["NBORCH_LOGICAL_DATE"],
            env["NBORCH_RUN_ID"], env["NBORCH_STATUS"], env["NBORCH_REASON"]) == (
        "on_sla_miss", "daily", "2026-01-01T06:00:00+01:00", "", "", "sla_miss")
    assert json.loads(env["NBORCH_PAYLOAD"])["deadline"] == "2026-01-01T07:00:00+01:00"
    assert "had not succeeded by 2026-01-01T07:00:00+01:00" in email_text(data)
    assert "it has no run" in email_text(data)
