"""Inside a running task: per-cell progress, streamed logs, secrets kept out of every file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import nborch, run_json, write_notebook, write_pipeline
from hypothesis import given
from hypothesis import strategies as st

from nborch.core.events import Throttle
from nborch.ui.logs import collapse_carriage_returns, shown


def start_run(path: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", str(path)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith("run "), first + proc.stderr.read()
    return proc, first.split()[1]


def test_logs_follow_streams_while_the_task_runs(workdir: Path):
    done = workdir / "done"
    write_notebook(workdir / "talk.ipynb",
                   "import time\nfor i in range(8):\n    print('line', i, flush=True)\n"
                   "    time.sleep(0.5)",
                   f"open({str(done)!r}, 'w').close()")
    path = write_pipeline(workdir, {"name": "talk", "tasks": {"talk": {"notebook": "talk.ipynb"}}})
    run_proc, run_id = start_run(path, workdir)
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    follow = subprocess.Popen([sys.executable, "-m", "nborch", "logs", run_id, "talk", "--follow"],
                              cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    seen_while_running = []
    for line in follow.stdout:
        if line.startswith("line"):
            seen_while_running.append(not done.exists())
    follow.wait(timeout=60)
    run_proc.communicate(timeout=60)
    assert follow.returncode == 0, follow.stderr.read()
    assert len(seen_while_running) == 8
    assert seen_while_running[0], "the first line only arrived after the task ended"
    assert done.exists()  # and the command exited once the task had ended


def test_carriage_return_progress_bars_stay_one_line(workdir: Path):
    write_notebook(workdir / "bar.ipynb",
                   "import sys\nfor i in range(301):\n"
                   "    sys.stdout.write(f'\\rprogress {i}/300')\n"
                   "    sys.stdout.flush()\nprint()\nprint('done')")
    path = write_pipeline(workdir, {"name": "bar", "tasks": {"bar": {"notebook": "bar.ipynb"}}})
    run = run_json(nborch("run", str(path), "--json", cwd=workdir, check=True))
    out = nborch("logs", run["run_id"], "bar", cwd=workdir, check=True).stdout
    lines = [ln for ln in out.splitlines() if "progress" in ln]
    assert lines == ["progress 300/300"]
    assert "done" in out
    follow = nborch("logs", run["run_id"], "bar", "--follow", cwd=workdir, check=True).stdout
    assert [ln for ln in follow.splitlines() if "progress" in ln] == ["progress 300/300"]


def test_collapse_carriage_returns():
    assert collapse_carriage_returns("a\r b\r c\nnext\r\nend") == " c\nnext\nend"
    assert collapse_carriage_returns("tail\r") == "tail\r"  # nothing after it yet


@given(text=st.text(), colours=st.booleans())
def test_a_log_reaches_the_terminal_as_text(text, colours):
    out = shown(text, colours)
    escapes = out.replace("\x1b[", "").count("\x1b") if colours else out.count("\x1b")
    assert escapes == 0  # on a terminal only colour sequences remain
    assert not any(c in out for c in "\x07\x9b\x9d\r\x00")
    if colours:
        import re
        assert all(re.fullmatch(r"\x1b\[[0-9;]*m", m) for m in re.findall(r"\x1b\[[^a-z]*.?", out))


def test_logs_show_escape_sequences_a_task_printed_as_text(workdir: Path):
    """A task that prints a window title, an OSC 52 clipboard write and colours: `nborch
    logs` (stdout not a terminal here) prints them as text and drops the colours."""
    script = ("printf 'title\\033]0;pwned\\007 clip\\033]52;c;ZXZpbA==\\007 "
              "\\033[31mred\\033[0m end\\n'")
    path = write_pipeline(workdir, {"name": "esc", "tasks": {"say": {"command": ["sh", "-c",
                                                                                 script]}}})
    run = run_json(nborch("run", str(path), "--json", cwd=workdir, check=True))
    log = nborch("logs", run["run_id"], "say", cwd=workdir, check=True).stdout
    assert "\x1b" not in log and "\x07" not in log
    assert "title\\x1b]0;pwned\\x07 clip\\x1b]52;c;ZXZpbA==\\x07 red end" in log


def test_show_json_reports_the_running_cell(workdir: Path):
    # Each cell waits for the test to open its gate, so the test sees the task in every cell
    # however slowly `show` answers.
    gates = workdir / "gates"
    gates.mkdir()
    cells = [f"step = {i}\nimport os, time\nwhile not os.path.exists({str(gates / str(i))!r}):\n"
             "    time.sleep(0.02)" for i in range(8)]
    write_notebook(workdir / "slow.ipynb", *cells)
    path = write_pipeline(workdir, {"name": "cells", "tasks": {"slow": {"notebook": "slow.ipynb"}}})
    proc, run_id = start_run(path, workdir)
    seen = []
    deadline = time.monotonic() + 120
    try:
        for i in range(8):
            while not seen or seen[-1]["cell"] != i:  # until `show` reports cell i running
                assert proc.poll() is None and time.monotonic() < deadline, seen
                shown = run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))
                task = shown["tasks"]["slow"]
                if task["status"] == "running" and "progress" in task:
                    seen.append(task["progress"])
            (gates / str(i)).touch()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    reported = list(dict.fromkeys((p["cell"], p["cells"], p["line"]) for p in seen))
    assert reported == [(i, 8, f"step = {i}") for i in range(8)], seen
    final = run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))
    assert "progress" not in final["tasks"]["slow"]


def test_throttle_coalesces_a_burst_and_delivers_the_last_value():
    got = []
    lock = threading.Event()

    def emit(value):
        got.append(value)
        if value == 1999:
            lock.set()

    throttle = Throttle(emit, 0.1)
    for i in range(2000):
        throttle(i)
    assert lock.wait(5)
    assert got[0] == 0 and got[-1] == 1999 and len(got) <= 5


def test_a_closed_throttle_drops_its_trailing_call():
    """Trailing calls come from one timer thread, in the order they are due: once a later
    one has come, a cancelled earlier one would have come before it."""
    got, later = [], threading.Event()
    closed = Throttle(got.append, 0.05)
    closed(1)
    closed(2)  # pending, due in 0.05 s
    closed.close()
    other = Throttle(lambda value: later.set() if value == "b" else None, 0.1)
    other("a")
    other("b")  # due in 0.1 s, after the cancelled one
    assert later.wait(5)
    assert got == [1]


def test_a_secret_never_reaches_files_or_cli_output(workdir: Path):
    value = "pa55-Word-from-dotenv"
    (workdir / ".env").write_text(f"DB_PASSWORD={value}\n")
    write_notebook(workdir / "use.ipynb",
                   "import nborch\npw = nborch.secret('DB_PASSWORD')\n"
                   "print('connecting with', pw)\nnborch.publish('pw_len', len(pw))")
    write_notebook(workdir / "boom.ipynb",
                   "import os\n"
                   "raise ConnectionError(f\"login failed for {os.environ['DB_PASSWORD']}\")")
    path = write_pipeline(workdir, {"name": "sec", "secrets": ["DB_PASSWORD"], "tasks": {
        "use": {"notebook": "use.ipynb"}, "boom": {"notebook": "boom.ipynb"}}})
    outputs = []
    for args in (["run", str(path)], ["run", str(path), "--json"]):
        proc = nborch(*args, cwd=workdir)
        assert proc.returncode == 1
        outputs += [proc.stdout, proc.stderr]
    run_id = run_json(nborch("runs", "--json", cwd=workdir, check=True))[0]["run_id"]
    for args in (["show", run_id], ["show", run_id, "--json"], ["logs", run_id, "use"],
                 ["logs", run_id, "boom"]):
        proc = nborch(*args, cwd=workdir, check=True)
        outputs += [proc.stdout, proc.stderr]
    assert not [o for o in outputs if value in o]
    assert any("login failed for ***" in o for o in outputs)
    assert any("connecting with ***" in o for o in outputs)
    shown = run_json(nborch("show", run_id, "--json", cwd=workdir, check=True))
    assert shown["tasks"]["use"]["values"] == {"pw_len": len(value)}  # the task had the real value
    for file in (workdir / ".nborch").rglob("*"):
        if file.is_file():
            assert value.encode() not in file.read_bytes(), file
    executed = Path(shown["tasks"]["use"]["output_path"]).read_text()
    assert "connecting with ***" in executed
    missing = write_pipeline(workdir, {"name": "m", "secrets": ["NOT_SET_ANYWHERE_123"], "tasks": {
        "use": {"notebook": "use.ipynb"}}}, name="m.yaml")
    proc = nborch("run", str(missing), cwd=workdir)
    assert proc.returncode == 2 and "NOT_SET_ANYWHERE_123" in proc.stderr
