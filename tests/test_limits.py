"""Limits (SPEC 2): cell output kept per attempt, log size and published value size are
capped, with clear messages, and the orchestrator's memory stays bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline
from nborch.core.sizes import human, parse_size

PY = sys.executable
MiB = 1024 * 1024


def _outputs(path: str) -> list:
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _markers(path: str) -> list[str]:
    return [o.text for o in _outputs(path)
            if o.output_type == "stream" and "output limit of" in o.text]


def test_256_mib_of_output_runs_with_bounded_memory(workdir: Path):
    """The issue's notebook: 2560 prints of 100 KiB used to take the orchestrator to 2.6 GB
    and fail with a CellTimeoutError although no timeout was set."""
    write_notebook(workdir / "loud.ipynb",
                   "chunk = 'x' * (100 * 1024 - 1)\nfor i in range(2560):\n    print(chunk)",
                   "print('after the flood')",
                   "import nborch\nnborch.publish('done', True)")
    write_pipeline(workdir, {"name": "loud", "tasks": {"loud": {"notebook": "loud.ipynb"}}})
    env = {k: v for k, v in os.environ.items() if k not in ("NBORCH_HOME", "NBORCH_MAX_OUTPUT")}
    started = time.monotonic()
    proc = subprocess.Popen([PY, "-m", "nborch", "run", "pipeline.yaml", "--json"], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    orchestrator, peak = psutil.Process(proc.pid), 0
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            peak = max(peak, orchestrator.memory_info().rss)  # the nborch process, not its kernel
        except psutil.Error:
            break
        time.sleep(0.02)  # sampling: the peak is a plateau of seconds, not a spike
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    run = json.loads(out)
    task = run["tasks"]["loud"]
    assert task["status"] == "success", (task["error"], err)
    assert task["values"] == {"done": True}
    executed = Path(task["output_path"])
    # 4 MiB of text kept (the first 4 MiB printed), one marker in the first cell, and the
    # later cells' output dropped too (one marker each), the published value kept.
    assert executed.stat().st_size < 4 * MiB + 64 * 1024
    markers = _markers(str(executed))
    assert len(markers) == 2, markers
    assert "nborch: output limit of 4 MiB reached" in markers[0]
    assert "bytes) were dropped; set NBORCH_MAX_OUTPUT to keep more" in markers[0]
    kept = sum(len(o.text) for o in _outputs(str(executed))
               if o.output_type == "stream" and o.name == "stdout")
    assert kept == 4 * MiB
    log = next((workdir / ".nborch" / "runs" / run["run_id"]).glob("loud.log"))
    text = log.read_text()
    assert log.stat().st_size < 4 * MiB + 4096
    assert "further output of this attempt is dropped" in text
    assert "more output messages" in text and text.rstrip().endswith(": ok ---")
    # The bound: the orchestrator's own ~100 MB, plus messages received and not yet
    # dropped (1 MiB each: kernels send stream output in pieces), plus 4 MiB kept and its
    # copies when saved. Before the limit it was 2.6 GB (the output held ~10 times).
    print(f"orchestrator peak RSS {peak / MiB:.0f} MiB, {elapsed:.1f} s")
    assert 0 < peak < 600 * MiB


def test_output_limit_setting_clears_and_errors(workdir: Path, monkeypatch):
    """NBORCH_MAX_OUTPUT (a task's env wins); cleared output frees its room; an error is kept
    past the limit; rich outputs are dropped whole, a stream in part."""
    monkeypatch.setenv("NBORCH_MAX_OUTPUT", "1M")  # the orchestrator's setting...
    write_notebook(
        workdir / "nb.ipynb",
        # progress shown by clearing: 200 KiB in all, never more than 1 KiB at once (not
        # thousands of messages: past zmq's high-water marks, iopub messages are lost).
        # One write per line: print writes its end apart, and the two may be two messages.
        "import sys\nfrom IPython.display import clear_output, display\nfor i in range(200):\n"
        "    clear_output(wait=True)\n    sys.stdout.write(str(i) * (1024 // len(str(i))) + '\\n')",
        "_ = sys.stdout.write('a' * 40000 + '\\n')",
        "display({'text/html': 'h' * 30000, 'text/plain': 'big'}, raw=True)",
        "_ = sys.stdout.write('late\\n')",
        "raise ValueError('kept although over the limit')")
    p = Pipeline("caps")
    p.notebook("nb.ipynb", env={"NBORCH_MAX_OUTPUT": "64K"})  # ...and the task's, which wins
    run = p.run()
    task = run.tasks["nb"]
    assert task.status == "failed" and task.error["type"] == "ValueError"
    nb = nbformat.read(task.output_path, as_version=4)
    progress, big_print, rich, late, boom = [c.outputs for c in nb.cells if c.cell_type == "code"]
    assert [o.text.strip() for o in progress] == ["199" * 341]
    assert len(big_print) == 1 and len(big_print[0].text) == 40001  # fits: 64K - 1K used
    # 64 KiB - 41 KiB left: the HTML is dropped whole, the next print entirely
    assert len(rich) == 1 and "output limit of 64 KiB reached; 1 more output messages " \
                              "(30,003 bytes) were dropped" in rich[0].text
    assert len(late) == 1 and "1 more output messages (5 bytes)" in late[0].text
    assert [o.ename for o in boom if o.output_type == "error"] == ["ValueError"]
    log = Path(task.output_path).with_suffix(".log").read_text()
    assert "ValueError: kept although over the limit" in log
    assert "2 more output messages (30,008 bytes) were dropped" in log


def test_a_too_large_published_value_fails_the_task(workdir: Path):
    write_notebook(workdir / "big.ipynb", "import nborch\nnborch.publish('small', 1)\n"
                                          "nborch.publish('rows', ['r' * 1000] * 100)")
    # A display that bypasses nborch.publish's check is refused by the orchestrator.
    write_notebook(workdir / "bypass.ipynb",
                   "from IPython.display import display\n"
                   "display({'application/vnd.nborch.publish+json': "
                   "{'name': 'blob', 'value': 'b' * 200000}, 'text/plain': ''}, raw=True)")
    write_notebook(workdir / "allowed.ipynb",
                   "import nborch\nnborch.publish('rows', ['r' * 1000] * 100)")
    write_pipeline(workdir, {"name": "values", "tasks": {
        "big": {"notebook": "big.ipynb"},
        "bypass": {"notebook": "bypass.ipynb"},
        "allowed": {"notebook": "allowed.ipynb", "env": {"NBORCH_MAX_VALUE": "256K"}}}})
    proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir)
    tasks = run_json(proc)["tasks"]
    big = tasks["big"]
    assert big["status"] == "failed"
    assert big["error"]["type"] == "ValueTooLarge"
    assert big["error"]["message"] == (
        "published value 'rows' is 100,400 bytes as JSON, over the limit of 64 KiB; publish a "
        "path to a file instead (nborch.artifact_path), or set NBORCH_MAX_VALUE to allow more")
    assert tasks["bypass"]["status"] == "failed"
    assert tasks["bypass"]["error"]["type"] == "ValueTooLarge"
    assert "'blob' is 200,002 bytes" in tasks["bypass"]["error"]["message"]
    assert tasks["bypass"]["values"] == {}
    assert b"b" * 1000 not in Path(tasks["bypass"]["output_path"]).read_bytes()
    assert tasks["allowed"]["status"] == "success", tasks["allowed"]["error"]
    assert len(tasks["allowed"]["values"]["rows"]) == 100


def test_command_values_and_log_are_capped(workdir: Path):
    """A command writing a huge values file directly fails cleanly (the file is not read
    into memory); `nborch publish` refuses a large value; a command's log is capped."""
    (workdir / "huge.py").write_text(
        "import os\nwith open(os.environ['NBORCH_VALUES_FILE'], 'a') as f:\n"
        "    f.write('{\"name\": \"ok\", \"value\": 1}\\n')\n"
        "    f.write('{\"name\": \"dump\", \"value\": \"')\n"
        "    for _ in range(200):\n        f.write('z' * (1024 * 1024))\n"
        "    f.write('\"}\\n')\n")
    (workdir / "cli.sh").write_text('nborch publish label "$(printf \'%070000d\' 0)"\n'
                                    'echo "publish exit $?"\n')
    (workdir / "loud.py").write_text(
        "import sys\nfor i in range(300):\n    print('y' * 100000)\n"
        "print('the end', file=sys.stderr)\n")
    write_pipeline(workdir, {"name": "cmds", "tasks": {
        "huge": {"command": [PY, "huge.py"]},
        "cli": {"command": ["sh", "cli.sh"]},
        "loud": {"command": [PY, "loud.py"], "env": {"NBORCH_MAX_OUTPUT": "1M"}}}})
    proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir)
    run = run_json(proc)
    tasks = run["tasks"]
    huge = tasks["huge"]
    assert huge["status"] == "failed" and huge["error"]["type"] == "ValueTooLarge"
    assert "'dump' is 209,715,202 bytes" in huge["error"]["message"], huge["error"]
    assert huge["values"] == {}

    assert tasks["cli"]["status"] == "success" and tasks["cli"]["values"] == {}
    log = nborch("logs", run["run_id"], "cli", cwd=workdir, check=True).stdout
    assert "nborch publish: error: published value 'label' is 70,002 bytes" in log
    assert "publish exit 2" in log

    assert tasks["loud"]["status"] == "success"
    log_path = workdir / ".nborch" / "runs" / run["run_id"] / "loud.log"
    assert log_path.stat().st_size < MiB + 4096
    text = log_path.read_text()
    assert "output limit of 1 MiB reached; further output of this attempt is dropped" in text
    assert "more output messages" in text and "the end" not in text


def test_sizes_parse_and_print():
    assert parse_size("65536") == 65536
    assert parse_size("64K") == parse_size("64KiB") == parse_size("64 kb") == 65536
    assert parse_size("1.5M") == 1536 * 1024 and parse_size("2G") == 2 << 30
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    assert human(4 * MiB) == "4 MiB" and human(1536) == "1.5 KiB" and human(10) == "10 bytes"
