"""Command tasks (SPEC 1.5): real programs run without a shell, beside real notebooks."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
from conftest import kernels_of, nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline, Store

PY = sys.executable


def _script(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return path.name


def test_a_command_publishes_and_notebooks_read_it(workdir: Path):
    """The issue's pipeline: a command that publishes, one that fails with exit code 3, one
    that hangs past its timeout, and a notebook that reads the first one's values."""
    _script(workdir / "extract.sh",
            'echo "extracting $1 for run $NBORCH_RUN_ID task $NBORCH_TASK"\n'
            'echo "date=$NBORCH_LOGICAL_DATE upstream=$NBORCH_UPSTREAM"\n'
            'echo "a,b\\n1,2" > "$2"\n'
            'nborch publish rows 2\n'
            'nborch publish meta \'{"source": "api", "ok": true}\'\n'
            'nborch publish label "two rows"\n'
            'echo "a warning" >&2\n')
    # The hanging command starts a child too: the timeout must stop the whole group.
    _script(workdir / "hang.sh", "sleep 300 &\necho child=$!\nsleep 300\n")
    write_notebook(workdir / "report.ipynb",
                   "import nborch\n"
                   "up = upstream['extract']\n"
                   "nborch.publish('rows_seen', up['values']['rows'] + 1)\n"
                   "nborch.publish('csv', open(up['product']).read().splitlines()[0])",
                   parameters="upstream = {}")
    write_pipeline(workdir, {"name": "mixed", "parameters": {"region": "eu"}, "tasks": {
        "extract": {"command": ["sh", "extract.sh", "{{ params.region }}", "{{ product }}"],
                    "product": "data/{{ ds }}/raw.csv"},
        "report": {"notebook": "report.ipynb", "upstream": ["extract"]},
        "broken": {"command": [PY, "-c", "import sys; print('oops', file=sys.stderr); "
                                          "sys.exit(3)"]},
        "hang": {"command": ["sh", "hang.sh"], "timeout": "2s"},
    }})
    # `nborch publish` is found although the test's PATH may not hold nborch's environment.
    proc = nborch("run", "pipeline.yaml", "--json", "--logical-date", "2026-03-01",
                  cwd=workdir, env={"PATH": os.defpath})
    assert proc.returncode == 1, proc.stderr
    run = run_json(proc)
    tasks = run["tasks"]
    assert tasks["extract"]["status"] == "success", tasks["extract"]
    assert tasks["extract"]["values"] == {"rows": 2, "meta": {"source": "api", "ok": True},
                                          "label": "two rows"}
    raw = workdir / "data" / "2026-03-01" / "raw.csv"
    assert tasks["extract"]["products"] == {"product": str(raw)}
    assert tasks["extract"]["command"][:3] == ["sh", "extract.sh", "eu"]
    assert tasks["report"]["status"] == "success", tasks["report"]["error"]
    assert tasks["report"]["values"] == {"rows_seen": 3, "csv": "a,b"}

    assert tasks["broken"]["status"] == "failed"
    error = tasks["broken"]["error"]
    assert error["type"] == "CommandFailed"
    assert "exited with code 3" in error["message"] and "oops" in error["message"]

    assert tasks["hang"]["status"] == "failed"
    assert tasks["hang"]["error"]["type"] == "TimeoutError"
    assert "2s" in tasks["hang"]["error"]["message"]
    # Neither the script nor the child it left in the background is alive.
    log = nborch("logs", run["run_id"], "hang", cwd=workdir, check=True).stdout
    child = int(log.split("child=", 1)[1].split()[0])
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert not [p for p in kernels_of(run["run_id"])], "a process of the run is still alive"

    # stdout and stderr are the task's log; the environment had the run's details.
    log = nborch("logs", run["run_id"], "extract", cwd=workdir, check=True).stdout
    assert f"extracting eu for run {run['run_id']} task extract" in log
    assert "date=2026-03-01T00:00:00+00:00 upstream={}" in log
    assert "a warning" in log


def test_retries_upstream_and_incremental(workdir: Path):
    """A command retried until it succeeds; a downstream command gets NBORCH_UPSTREAM; an
    --incremental run skips what is unchanged and re-runs what changed or lost its product."""
    _script(workdir / "flaky.py",
            "import pathlib, sys, nborch\n"
            "count = pathlib.Path('count.txt')\n"
            "n = int(count.read_text()) + 1 if count.exists() else 1\n"
            "count.write_text(str(n))\n"
            "if n == 1:\n    sys.exit('first attempt fails')\n"
            "pathlib.Path(sys.argv[1]).write_text('made')\n"
            "nborch.publish('attempt', n)\n")
    _script(workdir / "use.py",
            "import json, os, nborch\n"
            "up = json.loads(os.environ['NBORCH_UPSTREAM'])['flaky']\n"
            "nborch.publish('seen', [up['values']['attempt'], open(up['out']).read()])\n")
    spec = {"name": "inc", "tasks": {
        "flaky": {"command": [PY, "flaky.py", "{{ product.out }}"], "retries": 1,
                  "retry_delay": "0s", "product": {"out": "out/made.txt"}},
        "use": {"command": [PY, "use.py"], "upstream": ["flaky"], "env": {"MODE": "a"}},
    }}
    write_pipeline(workdir, spec)
    first = run_json(nborch("run", "pipeline.yaml", "--json", cwd=workdir, check=True))
    assert first["tasks"]["flaky"]["attempts"] == 2
    assert first["tasks"]["use"]["values"] == {"seen": [2, "made"]}

    second = run_json(nborch("run", "pipeline.yaml", "--json", "--incremental", cwd=workdir,
                             check=True))
    assert [second["tasks"][t]["status"] for t in ("flaky", "use")] == ["skipped", "skipped"]
    assert second["tasks"]["use"]["values"] == {"seen": [2, "made"]}

    spec["tasks"]["use"]["env"] = {"MODE": "b"}  # same argv, another environment
    write_pipeline(workdir, spec)
    third = run_json(nborch("run", "pipeline.yaml", "--json", "--incremental", cwd=workdir,
                            check=True))
    assert [third["tasks"][t]["status"] for t in ("flaky", "use")] == ["skipped", "success"]

    (workdir / "out" / "made.txt").unlink()  # a missing product: the task runs again
    fourth = run_json(nborch("run", "pipeline.yaml", "--json", "--incremental", cwd=workdir,
                             check=True))
    assert fourth["tasks"]["flaky"]["status"] == "success"
    assert (workdir / "out" / "made.txt").read_text() == "made"


def test_cancel_stops_a_running_command_and_secrets_are_masked(workdir: Path, monkeypatch):
    monkeypatch.setenv("NBORCH_TEST_TOKEN", "tok-3f9a7c1e")
    _script(workdir / "slow.sh", 'echo "token is $NBORCH_TEST_TOKEN"\nsleep 300\n')
    p = Pipeline("cancel", root=workdir, secrets=["NBORCH_TEST_TOKEN"])
    p.command(["sh", "slow.sh"], name="slow")
    started = threading.Event()
    handle = p.start(home=workdir / ".nborch", listeners=[
        lambda e: getattr(e, "text", "").startswith("token") and started.set()])
    assert started.wait(60), "the command's output never arrived"
    pids = [proc.pid for proc in kernels_of(handle.run_id)]
    assert pids, "the command's process carries the run id in its environment"
    handle.cancel()
    run = handle.wait(60)
    assert run.tasks["slow"].status == "cancelled"
    deadline = time.monotonic() + 10
    while kernels_of(handle.run_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not kernels_of(handle.run_id)
    text = Store(workdir / ".nborch").log_path(run.run_id, "slow").read_text()
    assert "token is ***" in text and "tok-3f9a7c1e" not in text


def test_publish_outside_a_task_says_so(workdir: Path):
    proc = nborch("publish", "rows", "3", cwd=workdir)
    assert proc.returncode == 0
    assert "not inside an nborch command task" in proc.stderr


def test_products_flow_downstream_and_are_recorded(workdir: Path):
    """A notebook's declared products: injected as ``product``, parent folders created,
    downstream under ``upstream[task][name]``, shown by ``show`` and the report."""
    write_notebook(workdir / "nb" / "make.ipynb",
                   "open(product['data'], 'w').write('1,2,3')\n"
                   "open(product['summary'], 'w').write('three')",
                   parameters="product = None")
    write_notebook(workdir / "nb" / "read.ipynb",
                   "import nborch\nup = upstream['make']\n"
                   "nborch.publish('data', open(up['data']).read())\n"
                   "nborch.publish('keys', sorted(up))",
                   parameters="upstream = None")
    write_pipeline(workdir, {"name": "prod", "tasks": {
        "make": {"notebook": "nb/make.ipynb",
                 "product": {"data": "out/{{ task }}/data.csv", "summary": "out/summary.txt"}},
        "read": {"notebook": "nb/read.ipynb", "upstream": ["make"]},
    }})
    run = run_json(nborch("run", "pipeline.yaml", "--json", cwd=workdir, check=True))
    data = workdir / "out" / "make" / "data.csv"
    assert run["tasks"]["read"]["values"] == {
        "data": "1,2,3", "keys": ["data", "notebook", "summary", "values"]}
    assert run["tasks"]["make"]["products"] == {"data": str(data),
                                               "summary": str(workdir / "out" / "summary.txt")}
    shown = nborch("show", run["run_id"], cwd=workdir, check=True).stdout
    assert "make.data = out/make/data.csv" in shown
    assert json.loads(nborch("show", run["run_id"], "--json", cwd=workdir,
                             check=True).stdout)["tasks"]["make"]["products"]["data"] == str(data)
    data.unlink()
    assert "(missing)" in nborch("show", run["run_id"], cwd=workdir, check=True).stdout
    nborch("report", run["run_id"], "-o", "run.html", cwd=workdir, check=True)
    assert "out/make/data.csv" in (workdir / "run.html").read_text()
