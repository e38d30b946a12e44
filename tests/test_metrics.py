"""Prometheus metrics: real runs, scraped over real HTTP while they run and after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import (
    free_port,
    nborch,
    run_json,
    small_pipeline,
    start_scheduler,
    wait_for_line,
    write_notebook,
    write_pipeline,
)

from nborch import Pipeline
from nborch.core.events import RunEnded, RunStarted, TaskStateChanged
from nborch.runtime.metrics import Metrics


def scrape(port: int) -> dict[str, float]:
    """The samples of ``/metrics``, keyed as printed: ``name{label="value",...}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def wait_for(port: int, expected: dict[str, float], deadline: float = 120) -> dict[str, float]:
    """Scrape until every sample in ``expected`` has its value (the server may not be up yet)."""
    end, samples = time.monotonic() + deadline, {}
    while time.monotonic() < end:
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if all(samples.get(k) == v for k, v in expected.items()):
            return samples
        time.sleep(0.1)
    raise AssertionError(f"never saw {expected}; last scrape: "
                         f"{ {k: v for k, v in samples.items() if k.startswith('nborch_')} }")


def waits_for(gate: Path) -> str:
    return f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)"


def test_run_serves_metrics_while_it_runs_and_stops_serving_at_the_end(workdir: Path):
    first, second = workdir / "first", workdir / "second"
    write_notebook(workdir / "first.ipynb", waits_for(first))
    write_notebook(workdir / "second.ipynb", waits_for(second))
    path = write_pipeline(workdir, {"name": "watched", "tasks": {
        "gate": {"notebook": "first.ipynb"},  # the longest path: it starts first
        "after": {"notebook": "second.ipynb", "upstream": ["gate"]},
        "side": {"notebook": "second.ipynb"}}})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nborch", "run", str(path), "--max-parallel", "1",
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        cwd=workdir, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        p = '{pipeline="watched"}'
        wait_for(port, {f"nborch_tasks_running{p}": 1.0, f"nborch_tasks_queued{p}": 1.0,
                        f"nborch_runs_running{p}": 1.0})
        first.touch()  # gate ends; after or side runs and waits, the other is queued
        samples = wait_for(port, {
            'nborch_task_runs_total{pipeline="watched",status="success"}': 1.0,
            f"nborch_tasks_running{p}": 1.0, f"nborch_tasks_queued{p}": 1.0})
        assert samples[f"nborch_attempt_duration_seconds_count{p}"] == 1.0
        assert samples[f"nborch_runs_running{p}"] == 1.0
        second.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in out
    with pytest.raises(OSError):  # the server was shut down with the run
        scrape(port)


def test_metrics_of_runs_in_process(workdir: Path):
    write_notebook(workdir / "ok.ipynb", "pass")
    write_notebook(workdir / "boom.ipynb", "raise ValueError('boom')")
    good = write_pipeline(workdir, {"name": "good", "tasks": {"a": {"notebook": "ok.ipynb"}}},
                          name="good.yaml")
    bad = write_pipeline(workdir, {"name": "bad", "tasks": {
        "a": {"notebook": "ok.ipynb"},
        "b": {"notebook": "boom.ipynb", "upstream": ["a"], "retries": 1, "retry_delay": "0s"},
        "c": {"notebook": "ok.ipynb", "upstream": ["b"]}}}, name="bad.yaml")
    with Metrics().serve(free_port(), "127.0.0.1") as metrics:
        for path in (good, bad):
            Pipeline.load(path).start(home=workdir / ".nborch", listeners=[metrics]).wait(120)
        samples = scrape(metrics.port)
    expected = {
        'nborch_runs_total{pipeline="good",status="success"}': 1.0,
        'nborch_runs_total{pipeline="bad",status="failed"}': 1.0,
        'nborch_task_runs_total{pipeline="good",status="success"}': 1.0,
        'nborch_task_runs_total{pipeline="bad",status="success"}': 1.0,
        'nborch_task_runs_total{pipeline="bad",status="failed"}': 1.0,
        'nborch_task_runs_total{pipeline="bad",status="upstream_failed"}': 1.0,
        'nborch_task_retries_total{pipeline="bad"}': 1.0,
        'nborch_attempt_duration_seconds_count{pipeline="good"}': 1.0,
        'nborch_attempt_duration_seconds_count{pipeline="bad"}': 3.0,  # a, and b twice
        'nborch_attempt_duration_seconds_bucket{le="3600.0",pipeline="bad"}': 3.0,
    }
    assert {k: samples.get(k) for k in expected} == expected
    for name in ("good", "bad"):
        for gauge in ("tasks_running", "tasks_queued", "runs_running"):
            assert samples[f'nborch_{gauge}{{pipeline="{name}"}}'] == 0.0
    assert samples['nborch_attempt_duration_seconds_sum{pipeline="bad"}'] > 0


def test_a_cancelled_run_leaves_no_task_counted_as_running_or_queued(workdir: Path):
    write_notebook(workdir / "wait.ipynb", waits_for(workdir / "never"))
    path = write_pipeline(workdir, {"name": "stopped", "tasks": {
        "a": {"notebook": "wait.ipynb"}, "b": {"notebook": "wait.ipynb"}}})
    p = '{pipeline="stopped"}'
    with Metrics().serve(free_port(), "127.0.0.1") as metrics:
        handle = Pipeline.load(path).start(home=workdir / ".nborch", max_parallel=1,
                                           listeners=[metrics])
        wait_for(metrics.port, {f"nborch_tasks_running{p}": 1.0, f"nborch_tasks_queued{p}": 1.0})
        handle.cancel()
        handle.wait(120)
        samples = scrape(metrics.port)
    assert samples['nborch_runs_total{pipeline="stopped",status="cancelled"}'] == 1.0
    assert samples['nborch_task_runs_total{pipeline="stopped",status="cancelled"}'] == 2.0
    assert samples[f"nborch_attempt_duration_seconds_count{p}"] == 1.0  # the cancelled attempt
    assert [samples[f"nborch_{g}{p}"] for g in ("tasks_running", "tasks_queued", "runs_running")] \
        == [0.0, 0.0, 0.0]


def test_a_run_ending_with_tasks_still_running_resets_the_gauges():
    """The engine itself failed: RunEnded comes while a task is still counted as running."""
    metrics = Metrics()
    at = "2026-01-01T00:00:00.000+00:00"
    metrics(RunStarted("r1", "p", at, at, {}, {"a": {}, "b": {}}, None, 1, "host"))
    metrics(TaskStateChanged("r1", "a", "queued", 0, at))
    metrics(TaskStateChanged("r1", "b", "queued", 0, at))
    metrics(TaskStateChanged("r1", "a", "running", 1, at))
    metrics(RunEnded("r1", "failed", at))
    value = metrics.registry.get_sample_value
    assert [value(f"nborch_{g}", {"pipeline": "p"}) for g in
            ("tasks_running", "tasks_queued", "runs_running")] == [0.0, 0.0, 0.0]
    assert value("nborch_runs_total", {"pipeline": "p", "status": "failed"}) == 1.0


def test_scheduler_serves_metrics_of_its_runs(workdir: Path):
    path = small_pipeline(workdir)
    start = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    nborch("schedule", "add", str(path), "--cron", "* * * * *", "--start", start.isoformat(),
           cwd=workdir, check=True)
    port = free_port()
    proc = start_scheduler(workdir, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    try:
        wait_for_line(proc, "ended: success")
        samples = wait_for(port, {
            'nborch_runs_total{pipeline="nightly",status="success"}': 1.0,
            'nborch_task_runs_total{pipeline="nightly",status="success"}': 2.0,
            'nborch_runs_running{pipeline="nightly"}': 0.0})
        assert samples['nborch_attempt_duration_seconds_count{pipeline="nightly"}'] == 2.0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def test_a_port_in_use_is_a_clear_error_before_the_run(workdir: Path):
    write_notebook(workdir / "ok.ipynb", "pass")
    path = write_pipeline(workdir, {"name": "p", "tasks": {"a": {"notebook": "ok.ipynb"}}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = nborch("run", str(path), "--metrics-port", str(port), "--metrics-host",
                      "127.0.0.1", cwd=workdir)
    assert proc.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in proc.stderr
    assert run_json(nborch("runs", "--json", cwd=workdir, check=True)) == []


def test_without_prometheus_client_the_error_says_what_to_install(workdir: Path):
    write_notebook(workdir / "ok.ipynb", "pass")
    path = write_pipeline(workdir, {"name": "p", "tasks": {"a": {"notebook": "ok.ipynb"}}})
    hidden = workdir / "hidden" / "prometheus_client"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = nborch("scheduler", "--metrics-port", str(free_port()), cwd=workdir,
                  env={"PYTHONPATH": str(hidden.parent)})
    assert proc.returncode == 2
    assert "pip install 'nborch[metrics]'" in proc.stderr
    proc = nborch("run", str(path), "--metrics-port", "9", cwd=workdir,
                  env={"PYTHONPATH": str(hidden.parent)})
    assert proc.returncode == 2 and "pip install 'nborch[metrics]'" in proc.stderr


def test_last_success_per_pipeline_is_read_from_the_store_at_each_scrape(workdir: Path):
    """The scheduler's metrics give when each pipeline last succeeded, whichever process
    ran it: a run before the scheduler started and one another process runs meanwhile."""
    path = write_pipeline(workdir, {"name": "p", "parameters": {"code": 0}, "tasks": {
        "a": {"command": ["sh", "-c", "exit {{ params.code }}"]}}})

    def run(code: int) -> dict:
        return run_json(nborch("run", str(path), "-p", f"code={code}", "--json", cwd=workdir))

    def stamp(record: dict) -> float:
        return datetime.fromisoformat(record["ended_at"]).timestamp()

    first = run(0)
    key = 'nborch_pipeline_last_success_timestamp_seconds{pipeline="p"}'
    port = free_port()
    proc = start_scheduler(workdir, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    try:
        wait_for(port, {key: stamp(first)})
        second = run(0)
        wait_for(port, {key: stamp(second)})
        assert run(3)["status"] == "failed"
        assert scrape(port)[key] == stamp(second)  # a failure is no success
        [row] = [r for r in run_json(nborch("runs", "--json", cwd=workdir, check=True))
                 if r["status"] == "failed"]
        assert row["pipeline_last_success_at"] == second["ended_at"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
