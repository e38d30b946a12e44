"""The %%orchestrate magic, the run widget and the dashboard, in real kernels.

Controlling notebooks are written here and executed with nbclient in a real kernel whose
folder is the notebook's, as in Jupyter; the pipelines they run start real task kernels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, ipc_kernel_manager, kernels_of, write_notebook
from hypothesis import given, settings
from hypothesis import strategies as st
from nbclient import NotebookClient

from nborch import Store
from nborch.core.errors import SpecError
from nborch.core.events import AttemptProgress, RunStarted, TaskStateChanged
from nborch.core.run import Run, TaskRun
from nborch.core.states import ACTIVE, COLOURS, TASK_STATES
from nborch.spec.loader import from_arrows
from nborch.ui import htmlview
from nborch.ui.htmlview import SvgGraph, layout
from nborch.ui.jupyter.cell import body_kind, marked_lines, notebook_stem
from nborch.ui.jupyter.widget import Refresher, RunView

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
GREEN, RED, ORANGE = (COLOURS[s].fill for s in ("success", "failed", "upstream_failed"))
NODE_FILL = re.compile(r'<g id="([^"]+)" class="node">.*?fill="([^"]+)"', re.S)


# -- helpers ----------------------------------------------------------------------------------

def controlling_notebook(*cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    return nb


def execute(folder: Path, *cells: str, allow_errors: bool = False) -> nbformat.NotebookNode:
    """Run ``cells`` top to bottom in one kernel started in ``folder``; keep widget state."""
    nb = controlling_notebook(*cells)
    NotebookClient(nb, timeout=180, km=ipc_kernel_manager(), allow_errors=allow_errors,
                   store_widget_state=True, resources={"metadata": {"path": str(folder)}}
                   ).execute(cleanup_kc=True)
    return nb


def outputs(cell) -> list:
    return cell.get("outputs", [])


def html_of(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs(cell))


def stdout_of(cell) -> str:
    return "".join(o.get("text", "") for o in outputs(cell) if o["output_type"] == "stream")


def widget_models(nb) -> dict:
    return nb.metadata["widgets"][WIDGET_STATE]["state"]


def live_graph_svgs(nb) -> list[str]:
    """The SVGs of the run views' graphs, as the widget state saved in the notebook has them."""
    return [m["state"]["value"] for m in widget_models(nb).values()
            if m["model_name"] == "HTMLModel" and "nborch-graph-live" in
            m["state"].get("_dom_classes", [])]


def fills(svg: str) -> dict[str, str]:
    return dict(NODE_FILL.findall(svg))


def error_text(cell) -> str:
    errors = [o for o in outputs(cell) if o["output_type"] == "error"]
    assert len(errors) == 1, outputs(cell)
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[0]["traceback"]))


def tiny_pipeline(folder: Path) -> None:
    write_notebook(folder / "extract.ipynb", "import nborch\nnborch.publish('rows', n * 2)",
                   parameters="n = 1")
    write_notebook(folder / "clean.ipynb",
                   "import nborch\n"
                   "nborch.publish('rows_seen', upstream['extract']['values']['rows'])",
                   parameters="upstream = {}")
    write_notebook(folder / "broken.ipynb", "x = 1", "raise ValueError('bad data in row 7')")


# -- the magic in a kernel -------------------------------------------------------------------

def test_wait_runs_the_pipeline_and_shows_the_widget_and_snapshot(workdir: Path, monkeypatch):
    tiny_pipeline(workdir)
    # Jupyter tells the kernel which notebook it serves; the pipeline is named after it.
    monkeypatch.setenv("JPY_SESSION_NAME", str(workdir / "sales report.ipynb"))
    nb = execute(
        workdir,
        "%load_ext nborch",
        "%%orchestrate --wait -p n=21 --out result --max-parallel 2\n"
        "extract.ipynb >> clean.ipynb\n"
        "broken.ipynb",
        "import json\n"
        "print(json.dumps({'status': result.status, 'pipeline': result.pipeline,\n"
        "                  'states': {n: t.status for n, t in result.tasks.items()},\n"
        "                  'values': result.values, 'same': _nborch_handle.run is result,\n"
        "                  'default_unset': '_nborch_run' not in globals()}))")
    seen = json.loads(stdout_of(nb.cells[2]))
    assert seen["states"] == {"extract": "success", "clean": "success", "broken": "failed"}
    assert seen["status"] == "failed" and seen["pipeline"] == "sales_report"
    assert seen["values"]["extract"] == {"rows": 42}            # -p reached the notebook
    assert seen["values"]["clean"] == {"rows_seen": 42}         # and upstream values flowed
    assert seen["same"] and seen["default_unset"]               # --out named the variable

    run_cell = nb.cells[1]
    # One drawing: the live widget, whose output became the final state when the run ended
    # (the widget first, for its Retry button; a plain copy for where widgets don't render).
    [output] = outputs(run_cell)
    assert output["output_type"] == "display_data"
    assert set(output["data"]) == {WIDGET_MIME, "text/html", "text/plain"}
    # The saved widget state holds the graph as drawn last: the final colours.
    graphs = live_graph_svgs(nb)
    assert len(graphs) == 1
    assert fills(graphs[0]) == {"extract": GREEN, "clean": GREEN, "broken": RED}
    bars = [m["state"] for m in widget_models(nb).values() if m["model_name"] == "IntProgressModel"]
    assert [(b["value"], b["max"], b["bar_style"]) for b in bars] == [(3, 3, "danger")]
    texts = " ".join(str(m["state"].get("value", "")) for m in widget_models(nb).values())
    assert "3/3 tasks done" in texts and "ValueError" in texts
    # The snapshot: plain HTML with the same graph, the table and the folded error.
    snapshot = html_of(run_cell)
    assert 'class="nborch-snapshot"' in snapshot
    assert fills(snapshot) == {"extract": GREEN, "clean": GREEN, "broken": RED}
    assert "<details" in snapshot and "bad data in row 7" in snapshot
    assert "raise ValueError" in snapshot                      # the failing cell
    assert 'data-task="clean"' in snapshot and ">clean.ipynb</a>" in snapshot
    assert "sales_report run" in output["data"]["text/plain"]
    assert "parameters: n=21" in output["data"]["text/plain"] and "parameters: n=21" in snapshot
    assert "logical date 20" in snapshot and " UTC" in snapshot             # times say their zone
    assert ": failed (3/3 tasks done" in output["data"]["text/plain"]  # not the first state
    # The run is recorded in the store beside the notebook.
    runs = Store(workdir / ".nborch").list_runs()
    assert [(r["pipeline"], r["status"]) for r in runs] == [("sales_report", "failed")]


def test_dry_run_validates_and_draws_but_runs_nothing(workdir: Path):
    tiny_pipeline(workdir)
    (workdir / "sub").mkdir()
    (workdir / "sub" / "pipeline.yaml").write_text(
        "name: from_file\ntasks:\n  extract: {notebook: ../extract.ipynb}\n", encoding="utf-8")
    nb = execute(
        workdir,
        "%load_ext nborch",
        "%%orchestrate --dry-run\nextract.ipynb >> clean.ipynb",
        "%%orchestrate --dry-run\nsub/pipeline.yaml",
        "%%orchestrate --dry-run --name renamed\n"
        "tasks:\n  first: {notebook: extract.ipynb, parameters: {n: 5}}\n"
        "  second: {notebook: clean.ipynb, upstream: [first]}\n")
    arrows, from_file, inline = (html_of(c) for c in nb.cells[1:])
    assert "pipeline &#39;notebook&#39; is valid: 2 tasks (extract, clean)" in arrows
    assert set(fills(arrows)) == {"extract", "clean"}
    assert "&#39;from_file&#39; is valid: 1 tasks" in from_file
    assert "&#39;renamed&#39; is valid: 2 tasks (first, second)" in inline
    assert not any(WIDGET_MIME in o.get("data", {}) for c in nb.cells for o in outputs(c))
    assert Store(workdir / ".nborch").list_runs() == []
    assert not (workdir / ".nborch" / "runs").exists()


def test_bad_bodies_give_short_messages_with_the_line_marked(workdir: Path):
    tiny_pipeline(workdir)
    nb = execute(
        workdir,
        "%load_ext nborch",
        "%%orchestrate --wait\nextract.ipynb >> clean.ipynb\nclean.ipynb > report.ipynb",
        "%%orchestrate --wait\nextract.ipynb >> clean.ipynb\nmissing.ipynb >> clean.ipynb",
        "%%orchestrate --wait -p nope=3\nextract.ipynb",
        "%%orchestrate --wait\nname: p\ntasks:\n  extract: {notebok: extract.ipynb}\n",
        "%%orchestrate --schedule 'at six'\nextract.ipynb",
        "%orchestrate status no-such-run",
        allow_errors=True)
    arrow, missing, param, yaml_key, schedule, status = (error_text(c) for c in nb.cells[1:])
    assert "line 2: 'clean.ipynb > report.ipynb'" in arrow and "put '>>' between" in arrow
    assert "   2 | clean.ipynb > report.ipynb" in arrow
    assert "notebook not found" in missing and "missing.ipynb" in missing
    assert "-p nope: no notebook of the cell declares 'nope'" in param
    assert "unknown key 'notebok'" in yaml_key and "did you mean 'notebook'" in yaml_key
    assert "--schedule: bad cron expression 'at six'" in schedule
    assert "no run 'no-such-run'" in status
    for cell in nb.cells[1:]:
        assert "Traceback" not in json.dumps(outputs(cell))
    # The offending line is the highlighted one (a validation problem names the task).
    raw = "\n".join(outputs(nb.cells[2])[0]["traceback"])
    assert "\x1b[1;4m   2 | missing.ipynb >> clean.ipynb" in raw
    assert "\x1b[1;4m   1 |" not in raw
    assert Store(workdir / ".nborch").list_runs() == []


def test_schedule_registers_the_cells_pipeline_for_the_scheduler(workdir: Path):
    from nborch import Pipeline
    from nborch.scheduling.scheduler import Scheduler
    from nborch.scheduling.schedules import registered
    tiny_pipeline(workdir)
    nb = execute(
        workdir,
        "%load_ext nborch",
        "%%orchestrate --schedule '0 6 * * *' --name morning -p n=21\n"
        "extract.ipynb >> clean.ipynb")
    assert "morning.pipeline.yaml: scheduled morning at '0 6 * * *' (UTC)" in \
        stdout_of(nb.cells[1]) + json.dumps(outputs(nb.cells[1]))
    store = Store(workdir / ".nborch")
    [schedule] = registered(store)
    assert (schedule.pipeline, schedule.cron, schedule.source) == (
        "morning", "0 6 * * *", str(workdir / "morning.pipeline.yaml"))
    assert store.list_runs() == []  # registered, not run
    # The written file is an ordinary pipeline: readable, editable, and what the scheduler runs.
    pipeline = Pipeline.load(workdir / "morning.pipeline.yaml")
    assert {n: t.upstream for n, t in pipeline.tasks.items()} == {"extract": (),
                                                                   "clean": ("extract",)}
    scheduler = Scheduler(workdir / ".nborch", say=lambda text: None)
    tomorrow_at_six = datetime.fromisoformat(schedule.created_at).replace(
        hour=6, minute=0) + timedelta(days=1)
    [run_id] = scheduler.tick(tomorrow_at_six)
    run = scheduler.handles[run_id].wait(120)
    assert run.status == "success" and run.values["clean"]["rows_seen"] == 42
    # A file of the user's is never overwritten.
    (workdir / "mine.pipeline.yaml").write_text("name: mine\ntasks: {}\n")
    nb = execute(workdir, "%load_ext nborch",
                 "%%orchestrate --schedule '0 6 * * *' --name mine\nextract.ipynb",
                 allow_errors=True)
    assert "mine.pipeline.yaml exists and was not written by %%orchestrate" in \
        error_text(nb.cells[1])


def test_background_run_returns_at_once_then_the_handle_waits(workdir: Path):
    # The first task waits for a gate file that only the next cell creates: if the magic
    # did not return at once, the run could not end and the notebook would time out.
    gate = workdir / "gate"
    write_notebook(workdir / "slow.ipynb",
                   f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n"
                   "    time.sleep(0.05)")
    write_notebook(workdir / "after.ipynb", "import nborch\nnborch.publish('ok', True)")
    nb = execute(
        workdir,
        "%load_ext nborch",
        "%%orchestrate\nslow.ipynb >> after.ipynb",
        f"status_then = _nborch_run.status\nopen({str(gate)!r}, 'w').close()\n"
        "run = _nborch_handle.wait(120)\n"
        "print(status_then, run.status, run.values['after'], run is _nborch_run)",
        # The view's thread redraws the first cell's output at the end (nbclient, unlike
        # Jupyter, drops output meant for a cell that is done): wait for it.
        "import threading\nimport ipywidgets.widgets.widget as ww\n"
        "for view in threading.enumerate():\n"
        "    if view.name.startswith('nborch-view-'):\n        view.join(60)\n"
        "print(sorted({type(w).__name__ for w in ww._instances.values()} & "
        "{'Button', 'HTML', 'IntProgress', 'Accordion'}))")
    assert stdout_of(nb.cells[2]).split() == ["running", "success", "{'ok':", "True}", "True"]
    assert WIDGET_MIME in outputs(nb.cells[1])[0]["data"]
    # Its output became a plain copy of the end (nothing to retry): the widgets are closed.
    assert stdout_of(nb.cells[3]).strip() == "[]"


def test_retry_failed_button_resumes_the_run_in_the_same_view(workdir: Path):
    fixed = workdir / "fixed"
    write_notebook(workdir / "first.ipynb", "import nborch\nnborch.publish('n', 1)")
    write_notebook(workdir / "flaky.ipynb",
                   f"import os\nassert os.path.exists({str(fixed)!r}), 'not fixed yet'")
    write_notebook(workdir / "after.ipynb", "import nborch\nnborch.publish('ok', True)")
    retry_button = ("import ipywidgets.widgets.widget as ww\n"
                    "[retry] = [w for w in ww._instances.values() "
                    "if getattr(w, 'description', None) == 'Retry failed']\n")
    nb = execute(
        workdir,
        "%load_ext nborch",
        "%%orchestrate --wait\nfirst.ipynb >> flaky.ipynb >> after.ipynb",
        retry_button + "print(_nborch_run.status, retry.layout.display != 'none')",
        f"open({str(fixed)!r}, 'w').close()\nfirst_run = _nborch_run\nretry.click()\n"
        "run = _nborch_handle.wait(120)\n"
        "print(run.status, run.run_id == first_run.run_id, run.tasks['flaky'].attempts, "
        "run.values['after'], retry.layout.display)")
    assert stdout_of(nb.cells[2]).split() == ["failed", "True"]  # the button is shown
    assert stdout_of(nb.cells[3]).split() == ["success", "True", "2", "{'ok':", "True}", "none"]
    store = Store(workdir / ".nborch")
    [row] = store.list_runs()
    attempts = {(a["task"], a["attempt"]) for a in store.attempts(row["run_id"])}
    # The kept task ran once; the failed one got its second attempt in the same run.
    assert attempts == {("first", 1), ("flaky", 1), ("flaky", 2), ("after", 1)}


def test_interrupt_under_wait_cancels_the_run(workdir: Path):
    write_notebook(workdir / "slow.ipynb", "import time", "time.sleep(120)")
    write_notebook(workdir / "after.ipynb", "pass")
    nb = controlling_notebook(
        "%load_ext nborch",
        "%%orchestrate --wait\nslow.ipynb >> after.ipynb",
        "from nborch import Store\nr = Store().get_run(_nborch_run.run_id)\n"
        "print(r.run_id, r.status, r.tasks['slow'].status, r.tasks['after'].status)")
    client = NotebookClient(nb, timeout=120, km=ipc_kernel_manager(), allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}})
    store = Store(workdir / ".nborch")

    def interrupt_once_slow_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = store.list_runs() if store.exists else []
            if runs and store.get_run(runs[0]["run_id"]).tasks["slow"].progress:
                os.kill(client.km.provisioner.pid, signal.SIGINT)  # the toolbar's stop square
                return
            time.sleep(0.1)

    with client.setup_kernel(cleanup_kc=True):
        client.execute_cell(nb.cells[0], 0)
        threading.Thread(target=interrupt_once_slow_runs, daemon=True).start()
        client.execute_cell(nb.cells[1], 1)
        client.execute_cell(nb.cells[2], 2)
    run_id, *states = stdout_of(nb.cells[2]).split()
    assert states == ["cancelled", "cancelled", "cancelled"]
    message = error_text(nb.cells[1])
    assert f"run {run_id} cancelled: the kernel was interrupted" in message
    assert "Traceback" not in message
    assert "Kernel died" not in stdout_of(nb.cells[1])  # a clean cancel says nothing of it
    assert 'class="nborch-snapshot"' in html_of(nb.cells[1])
    assert kernels_of(run_id) == []


def test_status_and_runs_show_runs_of_other_processes(workdir: Path):
    write_notebook(workdir / "quick.ipynb", "import nborch\nnborch.publish('x', 1)")
    write_notebook(workdir / "slow.ipynb", "import time\ntime.sleep(3)")
    (workdir / "quick.yaml").write_text("name: quick\ntasks:\n  quick: {notebook: quick.ipynb}\n")
    (workdir / "slow.yaml").write_text("name: slow\ntasks:\n  slow: {notebook: slow.ipynb}\n"
                                       "  quick: {notebook: quick.ipynb, upstream: [slow]}\n")
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    cli = [sys.executable, "-m", "nborch"]
    subprocess.run([*cli, "run", "quick.yaml"], cwd=workdir, env=env, check=True,
                   capture_output=True, timeout=120)
    first = Store(workdir / ".nborch").list_runs()[0]["run_id"]
    slow = subprocess.Popen([*cli, "run", "slow.yaml"], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        store = Store(workdir / ".nborch")
        while len(store.list_runs()) < 2:
            time.sleep(0.1)
        nb = execute(
            workdir,
            "%load_ext nborch",
            f"%orchestrate status {first}",
            "%orchestrate status",  # the latest: the slow run, still running: a live view
            # The view above polls the store in a thread that ends once it has shown the
            # run's end: wait for that thread, not for time to pass.
            "import threading\nfor view in threading.enumerate():\n"
            "    if view.name.startswith('nborch-poll-'):\n"
            "        view.join(120)\n        assert not view.is_alive(), view")
        assert slow.wait(60) == 0
    finally:
        slow.kill()
    finished = html_of(nb.cells[1])
    assert f'data-run="{first}"' in finished and fills(finished) == {"quick": GREEN}
    assert "<code>x</code> = 1" in finished                      # published values
    models = widget_models(nb)
    # The live status view followed the slow run, from the store, to its end (its output
    # then becomes that end, which nbclient drops: the cell is done by then).
    live = outputs(nb.cells[2])[0]
    assert WIDGET_MIME in live["data"]
    final = [m["state"]["value"] for m in models.values() if m["model_name"] == "HTMLModel"
             and "nborch-graph-live" in m["state"].get("_dom_classes", [])
             and 'id="slow"' in m["state"]["value"]]
    assert {"slow": GREEN, "quick": GREEN} in [fills(svg) for svg in final]


DASHBOARD_HELPERS = """
import time
import ipywidgets as widgets
import ipywidgets.widgets.widget as ww

def poll(found, what, seconds=120):
    deadline = time.monotonic() + seconds
    while (value := found()) is None:
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value

def row_of(run_id, state):
    # The dashboard's row of run_id once its state reads `state`: (its button, its state).
    for grid in [x for x in list(ww._instances.values()) if isinstance(x, widgets.GridBox)]:
        cells = list(grid.children)
        for i, cell in enumerate(cells):
            if isinstance(cell, widgets.Button) and cell.description == run_id \\
                    and f'nborch-{state}' in cells[i + 1].value:
                return cell, cells[i + 1]

def button(name):
    for x in list(ww._instances.values()):
        if isinstance(x, widgets.Button) and x.description == name \\
                and x.layout.display != 'none':
            return x
"""


def test_runs_dashboard_lists_runs_started_later_and_retries_one(workdir: Path):
    fixed = workdir / "fixed"
    write_notebook(workdir / "quick.ipynb", "import nborch\nnborch.publish('x', 1)")
    write_notebook(workdir / "flaky.ipynb",
                   f"import os\nassert os.path.exists({str(fixed)!r}), 'not fixed yet'")
    (workdir / "flow.yaml").write_text("name: flow\ntasks:\n  quick: {notebook: quick.ipynb}\n"
                                       "  flaky: {notebook: flaky.ipynb, upstream: [quick]}\n")
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    cli = [sys.executable, "-m", "nborch", "run", "flow.yaml"]
    nb = execute(
        workdir,
        "%load_ext nborch",
        "%orchestrate runs",  # nothing recorded yet
        DASHBOARD_HELPERS,
        # A run of another process, started after the dashboard was displayed.
        f"import subprocess\nsubprocess.run({cli!r}, cwd={str(workdir)!r}, env={env!r}, "
        "timeout=120)\nfrom nborch import Store\nrun_id = Store().list_runs()[0]['run_id']\n"
        "row, state = poll(lambda: row_of(run_id, 'failed'), 'the new run listed')\n"
        "print('listed', run_id)",
        # A click on its row opens its view, with Retry failed (and no Stop: it has ended).
        "row.click()\nretry = poll(lambda: button('Retry failed'), 'Retry failed shown')\n"
        "print('stop shown:', button('Stop') is not None)",
        f"open({str(fixed)!r}, 'w').close()\nretry.click()\n"
        "from nborch.ui.jupyter.actions import HANDLES\nresumed = HANDLES[run_id].wait(120)\n"
        "poll(lambda: row_of(run_id, 'success'), 'the resumed run listed as a success')\n"
        "print('resumed', resumed.status, resumed.run_id == run_id)")
    assert "no runs recorded yet" in outputs(nb.cells[1])[0]["data"]["text/plain"]
    run_id = stdout_of(nb.cells[3]).split()[1]
    assert stdout_of(nb.cells[4]).split() == ["stop", "shown:", "False"]
    assert stdout_of(nb.cells[5]).split() == ["resumed", "success", "True"]
    # One list: the runs are buttons of the list, not also a table or a list box.
    models = widget_models(nb)
    assert not any(m["model_name"] == "SelectModel" for m in models.values())
    rows = [m["state"]["description"] for m in models.values()
            if "nborch-run-row" in m["state"].get("_dom_classes", [])]
    assert rows == [run_id]
    store = Store(workdir / ".nborch")
    attempts = {(a["task"], a["attempt"]) for a in store.attempts(run_id)}
    assert attempts == {("quick", 1), ("flaky", 1), ("flaky", 2)}


def test_demo_notebook_runs_headless(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("NBORCH_HOME", raising=False)
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns(".nborch", ".ipynb_checkpoints"))
    path = tmp_path / "notebooks" / "orchestrate_demo.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, km=ipc_kernel_manager(), store_widget_state=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute(cleanup_kc=True)
    runs = Store(path.parent / ".nborch").list_runs()
    assert [r["status"] for r in runs] == ["success"]
    run = Store(path.parent / ".nborch").get_run(runs[0]["run_id"])
    assert list(run.tasks) == ["generate", "clean", "by_region", "by_product", "report"]
    assert run.values["generate"]["row_count"] == 500
    text = json.dumps([outputs(c) for c in nb.cells])
    assert "Traceback" not in text and "total revenue" in text
    graphs = live_graph_svgs(nb)  # the run's view, and the dashboard's view of that run
    assert len(graphs) == 2 and all(set(fills(svg).values()) == {GREEN} for svg in graphs)


# -- pieces without a kernel ---------------------------------------------------------------

def test_svg_recolouring_rewrites_only_node_fills():
    edges = {"extract": (), "by-region": ("extract",), "a.b": ("extract",)}
    graph = layout(edges)
    assert graph.names == ["extract", "by-region", "a.b"]
    svg = graph.render({"extract": "success", "by-region": "running", "a.b": "failed"})
    assert fills(svg) == {"extract": GREEN, "by&#45;region": COLOURS["running"].fill,
                          "a.b": RED}
    assert 'xlink:title="by-region: running"' in svg
    assert svg.startswith("<svg") and "<?xml" not in svg
    # Edges keep their colours; an unknown or missing state is neutral.
    assert svg.count('fill="none"') == 2
    again = graph.render({})
    assert set(fills(again).values()) == {"#f3f4f6"}
    # Recolouring is a pure function of the states: the same states, the same text.
    assert graph.render({"extract": "success", "by-region": "running", "a.b": "failed"}) == svg


def test_run_graph_writes_each_tasks_status_under_its_name():
    run = Run("r1", "p", tasks={})
    run.tasks = {"extract": TaskRun("extract", status="success", started_at="2026-01-01T00:00:00",
                                    ended_at="2026-01-01T00:00:04.2"),
                 "clean": TaskRun("clean", upstream=("extract",), status="running",
                                  started_at="2026-01-01T00:00:05",
                                  progress={"cell": 7, "cells": 20, "line": "df = load()"}),
                 "report": TaskRun("report", upstream=("clean",))}
    graph = layout(htmlview.run_edges(run))
    svg = graph.draw(run)
    groups = dict(re.findall(r'<g id="([^"]+)" class="node">(.*?)</g>', svg, re.S))
    texts = {name: re.findall(r">([^<>]*)</text>", body) for name, body in groups.items()}
    assert texts["extract"] == ["extract", "4.2s"]
    assert texts["clean"] == ["clean", "cell 8/20"]  # 7 done: the 8th runs, In [8]
    assert texts["report"] == ["report", ""]  # pending: nothing under its name
    assert 'xlink:title="clean: running · cell 8/20"' in svg
    # The layout is reused: only the slots change from one state to the next.
    run.tasks["clean"].progress = {"cell": 8, "cells": 20, "line": ""}
    assert graph.draw(run) == svg.replace("cell 8/20", "cell 9/20")


def test_svg_recolouring_handles_any_graphviz_shape():
    svg = ('<svg><g id="graph0" class="graph"><g id="n1" class="node"><title>n1</title>'
           '<ellipse fill="white" stroke="black"/></g><g id="e" class="edge">'
           '<path fill="none"/></g><g id="n2" class="node"><polygon fill="white"/></g></svg>')
    graph = SvgGraph(svg)
    out = graph.render({"n1": "success", "n2": "cancelled"})
    assert f'<ellipse fill="{GREEN}"' in out
    assert f'<polygon fill="{COLOURS["cancelled"].fill}"' in out and '<path fill="none"/>' in out


def test_a_thousand_events_cause_a_handful_of_renders():
    rendered = []
    refresher = Refresher(lambda: rendered.append(time.monotonic()) or False,
                          interval=0.25, tick=10.0).start()
    started = time.monotonic()
    for _ in range(1000):
        refresher.mark()
        time.sleep(0.0005)
    elapsed = time.monotonic() - started
    time.sleep(0.4)
    refresher.stop()
    refresher.join(5)
    assert not refresher.alive
    # At most one render per interval while events pour in, and one after the last.
    assert 1 <= len(rendered) <= elapsed / 0.25 + 3, (len(rendered), elapsed)
    gaps = [b - a for a, b in zip(rendered, rendered[1:])]
    assert all(gap >= 0.24 for gap in gaps), gaps


def test_refresher_stops_after_the_final_render_and_calls_on_done():
    states = iter([False, False, True])
    done = threading.Event()
    refresher = Refresher(lambda: next(states), interval=0.01, tick=0.01, on_done=done.set)
    refresher.start().join(5)
    assert done.is_set() and refresher.renders == 3


def _run_with_progress() -> Run:
    run = Run.from_start(RunStarted(
        run_id="r1", pipeline="p", started_at="2026-01-01T00:00:00+00:00",
        logical_date="2026-01-01T00:00:00+00:00", params={},
        tasks={"a": {"upstream": []}, "b": {"upstream": ["a"]}}, source=None, pid=1, host="h"))
    run.apply(TaskStateChanged("r1", "a", "running", 1, "2026-01-01T00:00:01+00:00"))
    run.apply(AttemptProgress("r1", "a", 1, 7, 20, "df = load('<x>')"))
    return run


def test_run_view_shows_states_progress_and_the_stop_button():
    run = _run_with_progress()
    stopped = []
    view = RunView(run, on_stop=lambda: stopped.append(True))
    assert fills(view.graph.value) == {"a": COLOURS["running"].fill, "b": "#e5e7eb"}
    assert "cell 8/20 · df = load(&#39;&lt;x&gt;&#39;)" in view.table.value
    assert (view.bar.value, view.bar.max, view.bar.description) == (0, 2, "0/2")
    assert "0/2 tasks done · 1 pending, 1 running" in view.summary.value
    assert view.stop_button.description == "Stop" and not view.stop_button.disabled
    view.stop_button.click()
    assert stopped == [True] and view.stop_button.disabled and "stopping" in view.summary.value
    run.apply(TaskStateChanged("r1", "a", "failed", 1, "2026-01-01T00:00:03+00:00",
                               error={"type": "KeyError", "message": "'price'", "cell": 3,
                                      "cell_source": "df['price']",
                                      "traceback": "KeyError: 'price'"}))
    view.show(run)
    assert fills(view.graph.value)["a"] == RED
    errors = "".join(e.value for e in view.errors.children)
    assert "<details" in errors and "in cell 3" in errors
    assert "df[&#39;price&#39;]" in errors
    # Another failure adds its own element: the first error's is left as it was, so a
    # user who unfolded it keeps it open.
    [first] = view.errors.children
    before = first.value
    run.apply(TaskStateChanged("r1", "b", "running", 1, "2026-01-01T00:00:04+00:00"))
    run.apply(TaskStateChanged("r1", "b", "failed", 1, "2026-01-01T00:00:05+00:00",
                               error={"type": "OSError", "message": "disk"}))
    view.show(run)
    assert len(view.errors.children) == 2 and view.errors.children[0] is first
    assert first.value == before
    assert "cell 8/20" not in view.table.value


def test_a_500_instance_grid_is_one_node_one_row_and_one_folding_panel():
    states = ["success"] * 37 + ["failed"] * 2 + ["running"] * 3 + ["pending"] * 458
    tasks = {"extract": TaskRun("extract", status="success")}
    tasks.update({f"region-{i}": TaskRun(f"region-{i}", status=state, upstream=("extract",),
                                         grid="region")
                  for i, state in enumerate(states)})
    tasks["report"] = TaskRun("report", upstream=tuple(f"region-{i}" for i in range(500)))
    run = Run("r1", "p", tasks=tasks)
    assert htmlview.run_edges(run) == {"extract": (), "region": ("extract",),
                                       "report": ("region",)}
    assert htmlview.states_of(run) == {"extract": "success", "region": "running",
                                       "report": "pending"}
    # `nborch show` colours the grid's row by the same state as the widget's node.
    from nborch.ui.console import _grid_row
    row = _grid_row("region", [t for t in tasks.values() if t.grid == "region"])
    assert row[1].startswith(f"[{COLOURS['running'].terminal}]")
    assert htmlview.status_lines(run)["region"] == "37/500 · 2 failed"
    view = RunView(run)
    assert fills(view.graph.value) == {"extract": GREEN, "region": COLOURS["running"].fill,
                                       "report": "#e5e7eb"}
    assert view.table.value.count("<tr data-task=") == 3 and "region-7" not in view.table.value
    assert "37/500 done, 2 failed, 3 running, 458 pending" in view.table.value
    [panel] = view._panels
    assert view.grid_panels.titles == ("region (grid): 37/500 done, 2 failed, 3 running, "
                                       "458 pending",)
    # Folded, the instances' table is not rendered (nor sent); opened, it is.
    assert panel.table.value == ""
    view.grid_panels.selected_index = 0
    # Opened, it lists 200 of the 500: the failed and running ones among them, and says so.
    assert panel.table.value.count("<tr data-task=") == 200
    assert all(f'data-task="region-{i}"' in panel.table.value for i in range(37, 42))
    assert 'data-task="region-300"' not in panel.table.value
    assert "200 of 500 instances: the failed, then the running and queued" in \
        panel.table.value and "`nborch show r1` lists them all" in panel.table.value
    panel.failed_only.value = True  # the failed instances only
    assert panel.table.value.count("<tr data-task=") == 2
    assert 'data-task="region-37"' in panel.table.value
    panel.failed_only.value = False
    view.grid_panels.selected_index = None
    run.tasks["region-0"].status = "failed"
    view.show(run)
    assert panel.table.value.count("<tr data-task=") == 200  # as last shown: not re-rendered
    assert 'data-task="region-0" valign="top" style="border-top:1px solid var(--jp-border-' \
        'color2,#e5e7eb)"><td><b>region-0</b></td><td><span class="nborch-state nborch-success' \
        in panel.table.value
    run.tasks["region-0"].status = "success"
    # A page that is not re-rendered folds the instances under the grid's row instead.
    page = htmlview.task_table(run)
    assert page.count("<details>") == 1 and page.count("<tr data-task=") == 503
    for i in (39, 40):  # two running instances fail
        run.tasks[f"region-{i}"].status = "failed"
    view.show(run)
    assert view.grid_panels.titles[0] == ("region (grid): 37/500 done, 4 failed, 1 running, "
                                          "458 pending")
    assert "37/500 · 4 failed" in view.graph.value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(sorted(TASK_STATES)), max_size=60), st.integers(0, 70))
def test_a_grid_panel_lists_the_instances_that_need_an_eye_first(states, limit):
    """Of a grid's instances the panel lists ``limit`` at most, in the grid's order: every
    failed one first, then running or queued ones, then the others from the start."""
    from nborch.ui.jupyter.gridpanel import SHOWN_AS_FAILED, first_shown
    names = [f"g-{i}" for i in range(len(states))]
    run = Run("r", "p", tasks={n: TaskRun(n, status=s, grid="g") for n, s in zip(names, states)})
    shown = first_shown(run, names, limit)
    assert len(shown) == min(limit, len(names))
    assert shown == [n for n in names if n in set(shown)]  # in the grid's order
    rank = {n: 0 if s in SHOWN_AS_FAILED else 1 if s in ACTIVE else 2
            for n, s in zip(names, states)}
    left_out = [n for n in names if n not in set(shown)]
    if left_out and shown:  # nothing left out outranks what is shown
        assert min(rank[n] for n in left_out) >= max(rank[n] for n in shown)
    others = [n for n in shown if rank[n] == 2]  # and the others are the first ones
    assert others == [n for n in names if rank[n] == 2][:len(others)]


def test_grid_instances_are_labelled_with_their_parameters():
    from nborch.core.grouping import own_values
    names = [f"tiny-{i}" for i in range(3)]
    own = own_values({"tiny": names}, {f"tiny-{i}": {"n": 195 + i, "region": "eu", "out": "x"}
                                       for i in range(3)})
    assert own == {"tiny-0": {"n": 195}, "tiny-1": {"n": 196}, "tiny-2": {"n": 197}}
    tasks = {f"tiny-{i}": TaskRun(f"tiny-{i}", status="failed" if i == 1 else "success",
                                  grid="tiny", error={"type": "ValueError", "message": "odd"}
                                  if i == 1 else None, own_values=own[f"tiny-{i}"])
             for i in range(3)}
    run = Run("r1", "p", status="failed", tasks=tasks)
    # Only the parameters that tell the instances apart: in the table, the errors, the panel.
    assert htmlview.instance_params(run) == {"tiny-0": "n=195", "tiny-1": "n=196",
                                             "tiny-2": "n=197"}
    assert "<b>tiny-1</b> <span" in htmlview.task_table(run) and "(n=196)" in \
        htmlview.task_table(run)
    assert "<b>tiny-1</b> (n=196) failed" in htmlview.errors_html(run)
    view = RunView(run)
    view.grid_panels.selected_index = 0
    assert "(n=197)" in view._panels[0].table.value


def test_arrow_form_builds_the_graph():
    p = from_arrows("a.ipynb >> b.ipynb >> d.ipynb\n# a comment\n\n"
                    "a.ipynb >> c.ipynb >> d.ipynb  # two chains meet\nlonely.ipynb\n",
                    Path("/proj"), "demo")
    assert p.name == "demo"
    assert {n: t.upstream for n, t in p.tasks.items()} == {
        "a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "lonely": ()}
    assert list(p.tasks) == ["a", "b", "c", "d", "lonely"]  # upstream tasks first
    assert p.tasks["a"].notebook == Path("/proj/a.ipynb")
    sub = from_arrows("x/extract.ipynb >> ../y/load.ipynb", Path("/proj/nb"), "n")
    assert sub.tasks["load"].notebook == Path("/proj/y/load.ipynb")


@pytest.mark.parametrize("body, expected", [
    ("a.ipynb >> >> b.ipynb", "line 1: 'a.ipynb >> >> b.ipynb': a notebook path is missing"),
    ("a.ipynb >>", "line 1: 'a.ipynb >>': a notebook path is missing"),
    ("ok.ipynb\na.ipynb -> b.ipynb", "line 2: 'a.ipynb -> b.ipynb': 'a.ipynb -> b.ipynb' is not "
                                     "one notebook path; put '>>' between notebooks"),
    ("a.ipynb >> notes.txt", "line 1: 'a.ipynb >> notes.txt': 'notes.txt' is not a notebook path"),
    ("x/a.ipynb >> y/a.ipynb", "'y/a.ipynb' and 'x/a.ipynb' (line 1) would both be task 'a'"),
    ("bad name!.ipynb", "line 1: 'bad name!.ipynb': task name 'bad name!' may only use"),
    ("# only a comment", "no notebooks: write one chain per line"),
])
def test_arrow_form_errors_name_the_line(body, expected):
    with pytest.raises(SpecError) as err:
        from_arrows(body, Path("/proj"), "p")
    assert expected in str(err.value)


def test_body_kinds_and_marked_lines(tmp_path: Path):
    (tmp_path / "folder").mkdir()
    assert body_kind("a.ipynb >> b.ipynb", tmp_path) == "arrows"
    assert body_kind("a.ipynb", tmp_path) == "arrows"
    assert body_kind("  pipeline.yaml  \n", tmp_path) == "file"
    assert body_kind("folder", tmp_path) == "file"
    assert body_kind("# a pipeline\nname: x\ntasks: {}", tmp_path) == "yaml"
    body = "a.ipynb >> b.ipynb\nextract.ipynb >> missing.ipynb\n"
    assert marked_lines(["line 2: 'x': bad"], body) == {2}
    assert marked_lines(["task 'missing': notebook not found: /p/missing.ipynb"], body) == {2}
    assert marked_lines(["task 'first' (line 3): unknown key"],
                        "name: x\ntasks:\n  first: {}") == {3}
    assert marked_lines(["line 9: beyond the body"], body) == set()


def test_pipeline_name_comes_from_the_notebook(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert notebook_stem({}) == "notebook"
    assert notebook_stem({"__session__": "/home/me/Daily sales (v2).ipynb"}) == "Daily_sales_v2"
    monkeypatch.setenv("JPY_SESSION_NAME", "reports/weekly.ipynb")
    assert notebook_stem({"__session__": "other.ipynb"}) == "weekly"


def test_orchestrate_help_explains_the_cell_body_and_the_options():
    from nborch.ui.jupyter.magic import OrchestrateMagics
    text = OrchestrateMagics.orchestrate.__doc__  # what %%orchestrate? shows
    for part in ("arrow form", "YAML pipeline", "pipeline file", "nborch-runs/<run id>/",
                 "--output-dir", "--wait", "%orchestrate runs", "-p KEY=VALUE"):
        assert part in text, part
