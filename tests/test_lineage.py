"""OpenLineage events, received by a real HTTP server on 127.0.0.1 from the real client."""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from pathlib import Path

from conftest import Receiver, free_port, nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline

SECRET = "s3cr3t-Lineage-42"


def by_job(receiver: Receiver) -> dict[str, list[dict]]:
    """The received events by job name, in the order they came."""
    jobs: dict[str, list[dict]] = {}
    for post in receiver.posts:
        jobs.setdefault(post["json"]["job"]["name"], []).append(post["json"])
    return jobs


def test_runs_and_tasks_send_start_and_end_events_through_the_cli(workdir: Path,
                                                                  receiver: Receiver):
    write_notebook(workdir / "good.ipynb", "import os\nprint(os.environ['API_TOKEN'])",
                   parameters="token_length = 0")
    write_notebook(workdir / "bad.ipynb",
                   "import os\nraise ValueError('cannot connect with ' + os.environ['API_TOKEN'])")
    write_notebook(workdir / "after.ipynb", "pass")
    path = write_pipeline(workdir, {
        "name": "sales", "secrets": ["API_TOKEN"], "tasks": {
            "good": {"notebook": "good.ipynb", "parameters": {"token_length": len(SECRET)}},
            "bad": {"notebook": "bad.ipynb", "upstream": ["good"]},
            "after": {"notebook": "after.ipynb", "upstream": ["bad"]}}})
    proc = nborch("run", str(path), "--json", cwd=workdir,
                  env={"API_TOKEN": SECRET, "OPENLINEAGE_URL": receiver.url("")})
    assert proc.returncode == 1, proc.stderr
    run = run_json(proc)

    # Every event is in by the time the command exits: the run's end waits for them.
    assert {p["path"] for p in receiver.posts} == {"/api/v1/lineage"}
    jobs = by_job(receiver)
    assert {name: [e["eventType"] for e in events] for name, events in jobs.items()} == {
        "sales": ["START", "FAIL"], "sales.good": ["START", "COMPLETE"],
        "sales.bad": ["START", "FAIL"]}  # `after` never ran: upstream_failed sends nothing
    events = [p["json"] for p in receiver.posts]
    assert {e["job"]["namespace"] for e in events} == {"nborch"}
    assert all(e["producer"] == "urn:nborch:0.1.0" for e in events)

    run_start, run_end = jobs["sales"]
    run_id = run_start["run"]["runId"]
    assert run_end["run"]["runId"] == run_id and uuid.UUID(run_id)
    assert run_start["run"]["facets"]["nominalTime"]["nominalStartTime"] == run["logical_date"]
    assert run_end["run"]["facets"]["errorMessage"]["message"] == "tasks failed: bad"
    task_ids = set()
    for task in ("good", "bad"):
        start, end = jobs[f"sales.{task}"]
        assert start["run"]["runId"] == end["run"]["runId"]
        task_ids.add(start["run"]["runId"])
        for event in (start, end):
            parent = event["run"]["facets"]["parent"]
            assert parent["run"]["runId"] == run_id
            assert (parent["job"]["namespace"], parent["job"]["name"]) == ("nborch", "sales")
            assert event["job"]["facets"]["jobType"]["jobType"] == "TASK"
    assert len(task_ids | {run_id}) == 3

    error = jobs["sales.bad"][1]["run"]["facets"]["errorMessage"]
    assert error["message"] == "ValueError: cannot connect with ***"
    assert error["programmingLanguage"] == "python"
    assert "ValueError" in error["stackTrace"]
    assert "errorMessage" not in jobs["sales.good"][1]["run"]["facets"]
    # Neither the secret nor the parameters are sent.
    for post in receiver.posts:
        body = json.dumps(post["json"])
        assert SECRET not in body and "token_length" not in body


def test_config_from_client_variables_namespace_and_retries_as_new_runs(
        workdir: Path, receiver: Receiver, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", receiver.url(""))
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "team-data")
    write_notebook(workdir / "flaky.ipynb", "raise RuntimeError('always')")
    p = Pipeline("flaky", retries=1, retry_delay=0)
    p.notebook("flaky.ipynb")
    run = p.run()  # in the API too, the run ends once its events are out
    assert run.status == "failed"

    jobs = by_job(receiver)
    assert [e["eventType"] for e in jobs["flaky"]] == ["START", "FAIL"]
    attempts = jobs["flaky.flaky"]
    assert [e["eventType"] for e in attempts] == ["START", "FAIL", "START", "FAIL"]
    first, second = attempts[0]["run"]["runId"], attempts[2]["run"]["runId"]
    assert first == attempts[1]["run"]["runId"] and second == attempts[3]["run"]["runId"]
    assert first != second  # each attempt is an OpenLineage run of its own
    assert {p["json"]["job"]["namespace"] for p in receiver.posts} == {"team-data"}
    assert {e["run"]["facets"]["parent"]["run"]["runId"] for e in attempts} == \
        {jobs["flaky"][0]["run"]["runId"]}


def test_a_cancelled_run_aborts(workdir: Path, receiver: Receiver, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url(""))
    started = workdir / "started"
    write_notebook(workdir / "slow.ipynb", f"open({str(started)!r}, 'w').close()\n"
                                           "import time\ntime.sleep(120)")
    p = Pipeline("slow")
    p.notebook("slow.ipynb")
    handle = p.start()
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.05)
    handle.cancel()
    assert handle.wait(timeout=60).status == "cancelled"
    assert {name: [e["eventType"] for e in events]
            for name, events in by_job(receiver).items()} == {
        "slow": ["START", "ABORT"], "slow.slow": ["START", "ABORT"]}


def test_an_unreachable_endpoint_is_logged_and_never_fails_the_run(workdir: Path):
    write_notebook(workdir / "ok.ipynb", "pass")
    path = write_pipeline(workdir, {"name": "fine", "tasks": {"ok": {"notebook": "ok.ipynb"}}})
    proc = nborch("run", str(path), "--json", cwd=workdir,
                  env={"OPENLINEAGE_URL": f"http://127.0.0.1:{free_port()}"})
    assert proc.returncode == 0, proc.stderr
    assert run_json(proc)["status"] == "success"
    # Logged: the failure itself, or (while the client still retries) the events dropped.
    assert "nborch: OpenLineage event" in proc.stderr


def test_a_hanging_endpoint_holds_the_runs_end_only_for_its_timeout(workdir: Path):
    """A server that takes connections and never answers: the client's request hangs, the
    run's end waits for the client's timeout, then drops what is left and says so."""
    write_notebook(workdir / "ok.ipynb", "pass")
    path = write_pipeline(workdir, {"name": "fine", "tasks": {"ok": {"notebook": "ok.ipynb"}}})
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:  # never accepts
        proc = nborch("run", str(path), "--json", cwd=workdir,
                      env={"OPENLINEAGE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"})
    assert proc.returncode == 0, proc.stderr
    assert run_json(proc)["status"] == "success"
    assert "not all sent within" in proc.stderr and "the rest are dropped" in proc.stderr


def test_without_the_client_a_configured_run_warns_and_runs(workdir: Path):
    shadow = workdir / "shadow" / "openlineage"  # an `openlineage` without its client
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    write_notebook(workdir / "ok.ipynb", "pass")
    path = write_pipeline(workdir, {"name": "fine", "tasks": {"ok": {"notebook": "ok.ipynb"}}})
    proc = nborch("run", str(path), "--json", cwd=workdir,
                  env={"OPENLINEAGE_URL": f"http://127.0.0.1:{free_port()}",
                       "PYTHONPATH": str(shadow.parent)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("pip install 'nborch[lineage]'") == 1


def test_declared_products_are_output_datasets(workdir: Path, receiver: Receiver):
    # Configured by an openlineage.yml in the current folder, as the client reads it.
    (workdir / "openlineage.yml").write_text(
        f"transport:\n  type: http\n  url: {receiver.url('')}\n  timeout: 3\n")
    write = "import sys; [open(p, 'w').close() for p in sys.argv[1:]]"
    path = write_pipeline(workdir, {"name": "made", "tasks": {
        "make": {"command": [sys.executable, "-c", write, "{{ product.data }}",
                             "{{ product.summary }}"],
                 "product": {"data": "out/data.csv", "summary": "out/summary.txt"}}}})
    proc = nborch("run", str(path), "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert run_json(proc)["tasks"]["make"]["products"] == {
        "data": str(workdir / "out" / "data.csv"),
        "summary": str(workdir / "out" / "summary.txt")}
    jobs = by_job(receiver)
    assert [e["eventType"] for e in jobs["made.make"]] == ["START", "COMPLETE"]
    for event in jobs["made.make"]:
        assert [(o["namespace"], o["name"]) for o in event["outputs"]] == [
            ("file", str(workdir / "out" / "data.csv")),
            ("file", str(workdir / "out" / "summary.txt"))]
    assert all(e["outputs"] == [] for e in jobs["made"])


def test_dataset_names_follow_the_openlineage_naming_spec():
    from nborch.runtime.lineage import dataset_name
    assert dataset_name("/data/out.csv") == ("file", "/data/out.csv")
    assert dataset_name("file:///data/out.csv") == ("file", "/data/out.csv")
    assert dataset_name("s3://bucket/runs/out.csv") == ("s3://bucket", "runs/out.csv")
