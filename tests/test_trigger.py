"""How each run started (``trigger``), and ``-p`` through ``backfill`` and ``schedule add``:
real ``nborch`` processes on a real store."""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import nborch, run_json, start_scheduler, wait_for_line, write_pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nborch.scheduling.schedules import Schedule, registered
from nborch.spec.yamltext import parse_params
from nborch.store.schema import MIGRATIONS
from nborch.store.store import Store
from nborch.ui import htmlview


def publishing_pipeline(workdir: Path, **extra) -> Path:
    """A command task publishing its ``who`` parameter and its logical day."""
    publish = [sys.executable, "-m", "nborch", "publish"]
    return write_pipeline(workdir, {"name": "daily", "parameters": {"who": "nobody"}, **extra,
                                    "tasks": {
        "greet": {"command": [*publish, "who", "{{ params.who }}"]},
        "day": {"command": [*publish, "day", "{{ ds }}"], "upstream": ["greet"]}}})


def shown(workdir: Path, run_id: str) -> dict:
    return run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))


def listed(workdir: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in run_json(nborch("runs", "--json", cwd=workdir, check=True))}


def test_trigger_of_a_run_a_resume_and_a_backfill_and_the_views(workdir: Path):
    path = publishing_pipeline(workdir, schedule={"cron": "0 6 * * *"})
    manual = run_json(nborch("run", str(path), "--json", cwd=workdir, check=True))
    assert manual["trigger"] == "manual"
    assert listed(workdir)[manual["run_id"]]["trigger"] == "manual"

    proc = nborch("backfill", str(path), "--start", "2026-01-01", "--end", "2026-01-02",
                  "-p", "who=zed", cwd=workdir, check=True)
    assert proc.stdout.count(" success") == 2
    runs = listed(workdir)
    backfilled = sorted((r for r in runs.values() if r["trigger"] == "backfill"),
                        key=lambda r: r["started_at"])
    records = [shown(workdir, r["run_id"]) for r in backfilled]
    assert [(r["trigger"], r["logical_date"], r["params"], r["tasks"]["greet"]["values"],
             r["tasks"]["day"]["values"]) for r in records] == [
        ("backfill", "2026-01-01T06:00:00+00:00", {"who": "zed"}, {"who": "zed"},
         {"day": "2026-01-01"}),
        ("backfill", "2026-01-02T06:00:00+00:00", {"who": "zed"}, {"who": "zed"},
         {"day": "2026-01-02"})]

    resumed = records[0]["run_id"]
    nborch("resume", resumed, "--from", "day", cwd=workdir, check=True)
    record = shown(workdir, resumed)
    assert (record["trigger"], record["status"], record["params"]) == \
        ("resume", "success", {"who": "zed"})

    text = nborch("runs", cwd=workdir, check=True).stdout
    assert [line.split()[3] for line in text.splitlines()[1:]] == \
        ["backfill", "resume", "manual"]  # newest started first
    assert "trigger resume, logical date 2026-01-01T06:00:00+00:00" in \
        nborch("show", resumed, cwd=workdir, check=True).stdout
    nborch("report", resumed, "-o", "report.html", cwd=workdir, check=True)
    assert "<dt>trigger</dt><dd>resume</dd>" in (workdir / "report.html").read_text()
    # The Jupyter views (run header, dashboard's runs table) read the same record.
    store = Store(workdir / ".nborch", readonly=True)
    assert "UTC (resume) · logical date" in htmlview.header(store.get_run(resumed))
    assert htmlview.runs_table(store.list_runs()).count("<td>backfill</td>") == 1


def test_a_scheduled_slot_is_triggered_by_schedule_with_the_schedule_params(workdir: Path,
                                                                           receiver):
    path = publishing_pipeline(workdir, on_success=[{"webhook": receiver.url()}])
    start = (datetime.now(timezone.utc) - timedelta(days=2)).date().isoformat()
    added = nborch("schedule", "add", str(path), "--cron", "0 6 * * *", "--start", start,
                   "-p", "who=ann", "-p", "who=bea", cwd=workdir, check=True)  # the last wins
    assert "-p who=bea" in added.stdout
    [saved] = run_json(nborch("schedule", "list", "--json", cwd=workdir, check=True))
    assert saved["params"] == {"who": "bea"}
    proc = start_scheduler(workdir)
    try:
        wait_for_line(proc, "ended: success")
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    [run] = listed(workdir).values()
    record = shown(workdir, run["run_id"])
    assert (run["trigger"], record["trigger"], record["tasks"]["greet"]["values"]) == \
        ("schedule", "schedule", {"who": "bea"})
    assert record["logical_date"].endswith("T06:00:00+00:00")
    [payload] = receiver.answered("/hook")  # the run ended once its hooks were sent
    assert (payload["run_id"], payload["trigger"]) == (run["run_id"], "schedule")
    # Backfilling a scheduled pipeline uses the schedule's parameters, -p over them.
    nborch("backfill", str(path), "--start", "2026-01-01", "--end", "2026-01-01", cwd=workdir,
           check=True)
    [backfilled] = [r for r in listed(workdir).values() if r["trigger"] == "backfill"]
    assert shown(workdir, backfilled["run_id"])["tasks"]["greet"]["values"] == {"who": "bea"}


def test_an_unknown_or_malformed_param_is_exit_2_and_changes_nothing(workdir: Path):
    path = publishing_pipeline(workdir, schedule={"cron": "0 6 * * *"})
    for command in (["schedule", "add", str(path)],
                    ["backfill", str(path), "--start", "2026-01-01", "--end", "2026-01-02"]):
        for param, message in (("whom=x", "unknown pipeline parameter 'whom'"),
                               ("who", "-p 'who': use -p KEY=VALUE")):
            proc = nborch(*command, "-p", param, cwd=workdir)
            assert proc.returncode == 2 and message in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (workdir / ".nborch" / "nborch.db").exists() or \
        (registered(Store(workdir / ".nborch")) == [] and
         Store(workdir / ".nborch").list_runs() == [])


def test_runs_recorded_before_triggers_read_back_as_unknown(workdir: Path):
    """A store made by the migrations before this one, with a run in it, is migrated by a
    reader: the old run's trigger is null (shown as unknown), its schedule has no params."""
    home = workdir / ".nborch"
    home.mkdir()
    before = next(i for i, m in enumerate(MIGRATIONS) if "ALTER TABLE runs ADD COLUMN trigger"
                  in m[0])  # the store as it was before the migration that added triggers
    with sqlite3.connect(home / "nborch.db") as db:
        for statement in (s for migration in MIGRATIONS[:before] for s in migration):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {before}")
        at = "2026-01-01T06:00:00.000+00:00"
        db.execute("INSERT INTO runs (run_id, pipeline, status, started_at, ended_at,"
                   " logical_date, params) VALUES ('old', 'p', 'success', ?, ?, ?, '{}')",
                   (at, at, at))
        db.execute("INSERT INTO schedules (pipeline, source, cron, timezone, catchup,"
                   " max_active_runs, created_at) VALUES ('p', '/srv/p.yaml', '0 6 * * *',"
                   " 'UTC', 0, 1, ?)", (at,))
    [row] = run_json(nborch("runs", "--json", cwd=workdir, check=True))
    assert (row["trigger"], row["logical_date"], row["pipeline_last_success_at"]) == \
        (None, at, at)
    assert shown(workdir, "old")["trigger"] is None
    assert nborch("runs", cwd=workdir, check=True).stdout.splitlines()[1].split()[3] == "unknown"
    assert "trigger unknown" in nborch("show", "old", cwd=workdir, check=True).stdout
    [schedule] = run_json(nborch("schedule", "list", "--json", cwd=workdir, check=True))
    assert schedule["params"] == {}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
                       st.text(min_size=0, max_size=40), max_size=4))
def test_schedule_params_come_back_from_the_store_as_given(tmp_path: Path, given: dict):
    """Any -p text, as parse_params reads it, is what the scheduler's runs get."""
    values = [f"{k}={v}" for k, v in given.items() if "{{" not in v and "{%" not in v]
    params = parse_params(values)
    store = Store(tmp_path / "home")
    store.save_schedule(Schedule("p", "/srv/p.yaml", "0 6 * * *", params=params,
                                 created_at="2026-01-01T00:00:00+00:00"))
    [back] = registered(store)
    store.close()
    assert back.params == params and json.dumps(back.params) == json.dumps(params)
