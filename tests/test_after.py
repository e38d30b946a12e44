"""Pipelines that run after other pipelines: a real scheduler process starts a run of
``report`` for each successful run of ``ingest`` (``nborch run``), with its logical date;
a failed one starts none; a restart neither repeats nor misses one."""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import nborch, run_json, start_scheduler, wait_for_line, wait_until, write_pipeline

from nborch import Store
from nborch.scheduling.schedules import Schedule


def _pipelines(workdir: Path) -> None:
    fails_on_request = ["sh", "-c", "exit {{ params.code }}"]
    write_pipeline(workdir, {"name": "ingest", "parameters": {"code": 0},
                             "tasks": {"load": {"command": fails_on_request}}}, "ingest.yaml")
    write_pipeline(workdir, {"name": "report", "schedule": {"after": ["ingest"]},
                             "tasks": {"t": {"command": ["true"]}}}, "report.yaml")


def _ingest(workdir: Path, day: str, code: int = 0) -> str:
    proc = nborch("run", "ingest.yaml", "--logical-date", day, "-p", f"code={code}", "--json",
                  cwd=workdir)
    assert proc.returncode == (0 if code == 0 else 1), proc.stderr
    return run_json(proc)["run_id"]


def _report_runs(store: Store) -> dict[str, str]:
    """logical date -> status of each run of report."""
    runs = [store.get_run(r["run_id"]) for r in store.list_runs("report", None)]
    return {r.logical_date: r.status for r in runs}


def _stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err
    return out


def test_each_success_of_the_upstream_starts_one_run_with_its_logical_date(workdir: Path):
    _pipelines(workdir)
    store = Store(workdir / ".nborch")
    _ingest(workdir, "2026-01-01")  # before the schedule: it does not count
    nborch("schedule", "add", "report.yaml", cwd=workdir, check=True)
    proc = start_scheduler(workdir)
    try:
        failed = _ingest(workdir, "2026-01-02", code=1)
        first = _ingest(workdir, "2026-01-03")
        lines = wait_for_line(proc, "started for 2026-01-03T00:00:00+00:00")
        wait_until(lambda: "running" not in _report_runs(store).values(), "report to end")
        out = _stop(proc)
    finally:
        proc.kill()
    assert any(f"ingest run {first} succeeded" in line for line in lines)
    assert failed not in "".join(lines) + out
    assert _report_runs(store) == {"2026-01-03T00:00:00+00:00": "success"}
    # A success while no scheduler runs starts its run at the restart; none twice.
    second = _ingest(workdir, "2026-01-04")
    proc = start_scheduler(workdir)
    try:
        wait_for_line(proc, "started for 2026-01-04T00:00:00+00:00")
        third = _ingest(workdir, "2026-01-05")
        wait_for_line(proc, "started for 2026-01-05T00:00:00+00:00")
        wait_until(lambda: "running" not in _report_runs(store).values(), "report to end")
        _stop(proc)
    finally:
        proc.kill()
    assert _report_runs(store) == {f"2026-01-0{d}T00:00:00+00:00": "success" for d in (3, 4, 5)}
    triggers = store.triggers("report")
    assert [t["upstream_run_id"] for t in triggers] == [first, second, third]
    assert {store.get_run(t["run_id"]).trigger for t in triggers} == {"after"}
    assert all(t["run_id"] for t in triggers)
    status = run_json(nborch("scheduler", "status", "--json", cwd=workdir, check=True))
    [report] = status["schedules"]
    assert (report["after"], report["next_slot"], report["pending"]) == (["ingest"], None, [])


def test_cycles_and_unknown_upstreams_are_refused(workdir: Path):
    _pipelines(workdir)
    unknown = nborch("schedule", "add", "report.yaml", cwd=workdir)
    assert unknown.returncode == 2, unknown.stderr
    assert "report runs after 'ingest', a pipeline this store has no run or schedule of" \
        in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    write_pipeline(workdir, {"name": "ingest", "schedule": {"after": "report"},
                             "tasks": {"t": {"command": ["true"]}}}, "ingest_after.yaml")
    nborch("schedule", "add", "ingest.yaml", "--cron", "0 6 * * *", cwd=workdir, check=True)
    nborch("schedule", "add", "report.yaml", cwd=workdir, check=True)
    cycle = nborch("schedule", "add", "ingest_after.yaml", cwd=workdir)
    assert cycle.returncode == 2, cycle.stderr
    assert "in a cycle: ingest after report after ingest" in cycle.stderr, cycle.stderr
    # The cron schedule of ingest is kept as it was.
    ingest = [r for r in Store(workdir / ".nborch").schedule_records() if r["pipeline"] == "ingest"]
    assert (ingest[0]["cron"], ingest[0]["after"]) == ("0 6 * * *", ())
    typo = nborch("schedule", "add", "report.yaml", "--after", "ingset", cwd=workdir)
    assert typo.returncode == 2 and "did you mean 'ingest'?" in typo.stderr, typo.stderr
    both = nborch("schedule", "add", "report.yaml", "--after", "ingest", "--cron", "0 6 * * *",
                  cwd=workdir)
    assert both.returncode == 2 and "give --cron or --after, not both" in both.stderr
    # A cycle in the store (written by hand): the scheduler refuses to start.
    store = Store(workdir / ".nborch")
    store.save_schedule(Schedule("loop", str(workdir / "report.yaml"), None, after=("loop",),
                                 created_at="2026-01-01T00:00:00+00:00"))
    refused = nborch("scheduler", cwd=workdir)
    assert refused.returncode == 2 and "in a cycle: loop after loop" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_successes_count_from_the_schedule_start_in_any_time_zone(workdir: Path):
    """On a real store: ``--start`` given with an offset is compared as a moment."""
    import os
    import socket

    from nborch.core.events import RunEnded, RunStarted
    store = Store(workdir / ".nborch")
    for run_id, ended in (("before", "2026-01-01T00:00:00.000+00:00"),
                          ("after", "2026-01-01T00:30:00.000+00:00")):
        store.record([RunStarted(run_id, "ingest", ended, "2026-01-01T00:00:00+00:00", {}, {},
                                 None, os.getpid(), socket.gethostname()),
                      RunEnded(run_id, "success", ended)])
    since = "2026-01-01T01:15:00+01:00"  # 00:15 UTC
    assert [r["run_id"] for r in store.untriggered_successes("report", ("ingest",), since)] \
        == ["after"]
    assert store.claim_trigger("report", "after") and not store.claim_trigger("report", "after")
    assert store.untriggered_successes("report", ("ingest",), since) == []
