"""Running pipelines with real kernels through real papermill, via the Python API."""

from __future__ import annotations

from pathlib import Path

import nbformat
from conftest import write_notebook

from nborch import Pipeline, Store
from nborch.core.events import TaskStateChanged


def test_chain_values_flow_downstream(workdir: Path):
    write_notebook(workdir / "extract.ipynb",
                   "import nborch\nnborch.publish('rows', n * 2)\n"
                   "nborch.publish('names', ['a', 'b'])",
                   parameters="n = 1")
    write_notebook(workdir / "clean.ipynb",
                   "import nborch\n"
                   "nborch.publish('rows_seen', upstream['extract']['values']['rows'])\n"
                   "nborch.publish('from_nb', upstream['extract']['notebook'])",
                   parameters="upstream = {}")
    p = Pipeline("chain")
    extract = p.notebook("extract.ipynb", parameters={"n": 21})
    p.notebook("clean.ipynb", upstream=[extract])
    run = p.run()
    assert run.status == "success", run.to_dict()
    assert run.values["extract"] == {"rows": 42, "names": ["a", "b"]}
    assert run.values["clean"]["rows_seen"] == 42
    assert run.values["clean"]["from_nb"] == run.tasks["extract"].output_path
    out = Path(run.tasks["clean"].output_path)
    assert out == (workdir / ".nborch" / "runs" / run.run_id / "clean.ipynb").resolve()
    executed = nbformat.read(out, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "upstream" in injected[0].source
    # Taken from the kernel's answer as it started, not asked again after the cells.
    assert executed.metadata["language_info"]["name"] == "python"
    # The store holds the same story.
    stored = Store(workdir / ".nborch").get_run(run.run_id)
    assert stored.to_dict()["tasks"] == run.to_dict()["tasks"]


def test_diamond_one_branch_fails_other_finishes(workdir: Path):
    write_notebook(workdir / "root.ipynb", "x = 1")
    write_notebook(workdir / "good.ipynb", "import nborch\nnborch.publish('ok', True)")
    write_notebook(workdir / "bad.ipynb", "y = 1", "raise ValueError('bad data in row 7')", "z = 2")
    write_notebook(workdir / "join.ipynb", "pass")
    write_notebook(workdir / "always.ipynb", "pass")
    write_notebook(workdir / "on_fail.ipynb", "pass")
    p = Pipeline("diamond")
    root = p.notebook("root.ipynb")
    good = p.notebook("good.ipynb", upstream=[root])
    bad = p.notebook("bad.ipynb", upstream=[root])
    p.notebook("join.ipynb", upstream=[good, bad])
    p.notebook("always.ipynb", upstream=[good, bad], trigger="all_done")
    p.notebook("on_fail.ipynb", upstream=[bad], trigger="one_failed")
    run = p.run()
    states = {n: t.status for n, t in run.tasks.items()}
    assert states == {"root": "success", "good": "success", "bad": "failed",
                      "join": "upstream_failed", "always": "success", "on_fail": "success"}
    assert run.status == "failed"
    error = run.tasks["bad"].error
    assert error["type"] == "ValueError"
    assert error["message"] == "bad data in row 7"
    assert "raise ValueError" in error["cell_source"]
    assert error["cell"] == 3  # In [3]: after the injected upstream cell and `y = 1`
    assert "bad" in run.tasks["join"].reason
    # The executed notebook of the failed task is kept, with the error in it.
    saved = nbformat.read(run.tasks["bad"].output_path, as_version=4)
    assert any(o.get("ename") == "ValueError" for c in saved.cells for o in c.get("outputs", []))


def test_retries_succeed_on_third_attempt(workdir: Path):
    counter = workdir / "count.txt"
    write_notebook(workdir / "flaky.ipynb",
                   f"from pathlib import Path\np = Path({str(counter)!r})\n"
                   "n = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\n"
                   "if n < 3:\n    raise RuntimeError(f'flaky failure {n}')\n"
                   "import nborch\nnborch.publish('attempt', n)")
    p = Pipeline("flaky", retries=3, retry_delay="0.2s", retry_backoff="exponential")
    p.notebook("flaky.ipynb")
    run = p.run()
    task = run.tasks["flaky"]
    assert run.status == "success"
    assert task.attempts == 3
    assert task.values == {"attempt": 3}
    history = Store(workdir / ".nborch").attempts(run.run_id, "flaky")
    assert [a["status"] for a in history] == ["failed", "failed", "success"]
    assert history[0]["error"]["message"] == "flaky failure 1"
    # Every attempt's executed notebook is kept.
    kept = sorted(p.name for p in (workdir / ".nborch" / "runs" / run.run_id).glob("flaky*.ipynb"))
    assert kept == ["flaky.attempt-1.ipynb", "flaky.attempt-2.ipynb", "flaky.ipynb"]
    assert history[0]["output_path"].endswith("flaky.attempt-1.ipynb")


def test_retries_exhausted_marks_failed(workdir: Path):
    write_notebook(workdir / "broken.ipynb", "1/0")
    p = Pipeline("broken", retries=1, retry_delay=0)
    p.notebook("broken.ipynb")
    run = p.run()
    assert run.tasks["broken"].status == "failed"
    assert run.tasks["broken"].attempts == 2
    assert run.tasks["broken"].error["type"] == "ZeroDivisionError"


def test_hanging_cell_is_stopped_by_timeout(workdir: Path):
    write_notebook(workdir / "hang.ipynb", "x = 1", "import time\nwhile True:\n    time.sleep(0.1)",
                   "never = 1")
    p = Pipeline("hang")
    p.notebook("hang.ipynb", timeout="3s")
    run = p.run()
    task = run.tasks["hang"]
    assert task.status == "failed"
    assert task.error["type"] == "TimeoutError"
    assert "timeout of 3s" in task.error["message"]
    assert "running cell 2: import time" in task.error["message"]  # names where it hung
    assert task.error["cell"] == 2
    assert "KeyboardInterrupt" in (task.error["traceback"] or "")  # interrupted, so a traceback
    assert task.duration < 30


def test_cell_ignoring_interrupt_is_killed_at_timeout(workdir: Path):
    write_notebook(workdir / "stubborn.ipynb",
                   "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                   "time.sleep(600)")
    p = Pipeline("stubborn")
    p.notebook("stubborn.ipynb", timeout=1)
    run = p.run()
    assert run.tasks["stubborn"].status == "failed"
    assert run.tasks["stubborn"].error["type"] == "TimeoutError"


def test_kernel_that_dies_fails_the_attempt_with_reason_and_retries(workdir: Path):
    marker = workdir / "died_once"
    write_notebook(workdir / "die.ipynb",
                   f"import os\nfrom pathlib import Path\nm = Path({str(marker)!r})\n"
                   "if not m.exists():\n    m.touch()\n    os._exit(7)",
                   "import nborch\nnborch.publish('survived', True)")
    write_notebook(workdir / "always_dies.ipynb", "import os\nos._exit(3)")
    p = Pipeline("dying", retry_delay=0)
    p.notebook("die.ipynb", retries=1)
    p.notebook("always_dies.ipynb")
    run = p.run()
    assert run.tasks["die"].status == "success"
    assert run.tasks["die"].attempts == 2
    first = Store(workdir / ".nborch").attempts(run.run_id, "die")[0]
    assert first["error"]["type"] == "DeadKernelError"
    assert first["error"]["message"] == "kernel died (exit code 7)"
    dead = run.tasks["always_dies"]
    assert dead.status == "failed"
    assert dead.error["message"] == "kernel died (exit code 3)"


def test_sys_exit_zero_succeeds(workdir: Path):
    write_notebook(workdir / "early.ipynb", "import sys\nsys.exit(0)",
                   "raise AssertionError('not reached')")
    p = Pipeline("early")
    p.notebook("early.ipynb")
    assert p.run().status == "success"


HOSTILE = [
    'quote " and \' and """ triple',
    "new\nline and \\ backslash and \\n literal",
    "__import__('os').system('touch PWNED')",
    "'); import os; os.system('touch PWNED'); ('",
    "{{ not a template once rendered }}",
    "unicode: é ✓ \u2028",
]


def test_parameter_strings_arrive_as_data(workdir: Path):
    write_notebook(workdir / "echo.ipynb",
                   "import nborch\nnborch.publish('got', values)\n"
                   "nborch.publish('kinds', [type(v).__name__ for v in values])",
                   parameters="values = ['x']")
    p = Pipeline("hostile")
    # Templates are rendered once by nborch; literal braces are passed with {% raw %}.
    given = [v if "{{" not in v else "{% raw %}" + v + "{% endraw %}" for v in HOSTILE]
    p.notebook("echo.ipynb", parameters={"values": given})
    run = p.run()
    assert run.status == "success", run.tasks["echo"].error
    assert run.values["echo"]["got"] == HOSTILE
    assert not list(workdir.rglob("PWNED"))


def test_templating_context_and_native_types(workdir: Path):
    write_notebook(workdir / "t.ipynb",
                   "import nborch\n"
                   "nborch.publish('seen', dict(size=size, size_type=type(size).__name__,"
                   " day=day, label=label, rid=rid, nested=nested))",
                   parameters="size = 1\nday = ''\nlabel = ''\nrid = ''\nnested = {}")
    p = Pipeline("templ", parameters={"size": 5, "region": "eu"})
    p.notebook("t.ipynb", parameters={
        "size": "{{ params.size }}", "day": "{{ ds }}", "label": "size-{{ params.size }}",
        "rid": "{{ run_id }}", "nested": {"regions": ["{{ params.region }}", "us"]}})
    run = p.run(params={"size": 8}, logical_date="2026-03-01T06:00:00+01:00")
    seen = run.values["t"]["seen"]
    assert seen == {"size": 8, "size_type": "int", "day": "2026-03-01", "label": "size-8",
                    "rid": run.run_id, "nested": {"regions": ["eu", "us"]}}
    assert run.logical_date.startswith("2026-03-01T06:00:00")


def test_upstream_injected_without_parameters_cell(workdir: Path):
    write_notebook(workdir / "a.ipynb", "import nborch\nnborch.publish('v', 1)")
    write_notebook(workdir / "b.ipynb",
                   "import nborch\nnborch.publish('got', upstream['a']['values']['v'])")
    write_notebook(workdir / "lonely.ipynb", "x = 1", parameters="upstream = None")
    p = Pipeline("noparams")
    p.notebook("b.ipynb", upstream=[p.notebook("a.ipynb")])
    p.notebook("lonely.ipynb")
    run = p.run()
    assert run.values["b"] == {"got": 1}
    lonely = nbformat.read(run.tasks["lonely"].output_path, as_version=4)
    assert any("upstream = {}" in c.source for c in lonely.cells)


def test_kernel_runs_in_notebook_folder_and_artifacts_are_per_task(workdir: Path):
    write_notebook(workdir / "sub" / "where.ipynb",
                   "import os, nborch\nnborch.publish('cwd', os.getcwd())\n"
                   "p = nborch.artifact_path('out/data.txt')\np.write_text('hi')\n"
                   "nborch.publish('artifact', str(p))")
    p = Pipeline("where")
    p.notebook("sub/where.ipynb")
    run = p.run()
    assert run.values["where"]["cwd"] == str((workdir / "sub").resolve())
    artifact = Path(run.values["where"]["artifact"])
    assert artifact == (workdir / ".nborch" / "runs" / run.run_id / "artifacts" / "where" / "out"
                        / "data.txt").resolve()
    assert artifact.read_text() == "hi"


def test_publish_rejects_values_that_are_not_json(workdir: Path):
    write_notebook(workdir / "nonjson.ipynb", "import nborch\nnborch.publish('s', {1, 2})")
    p = Pipeline("nonjson")
    p.notebook("nonjson.ipynb")
    run = p.run()
    error = run.tasks["nonjson"].error
    assert error["type"] == "TypeError" and "not JSON-serialisable" in error["message"]


def test_fail_fast_cancels_the_rest(workdir: Path):
    write_notebook(workdir / "boom.ipynb", "raise RuntimeError('boom')")
    write_notebook(workdir / "slow.ipynb", "import time\ntime.sleep(60)")
    write_notebook(workdir / "after.ipynb", "pass")
    p = Pipeline("ff")
    p.notebook("boom.ipynb")
    slow = p.notebook("slow.ipynb")
    p.notebook("after.ipynb", upstream=[slow])
    run = p.run(fail_fast=True, max_parallel=2)
    assert {n: t.status for n, t in run.tasks.items()} == {
        "boom": "failed", "slow": "cancelled", "after": "cancelled"}
    assert run.status == "failed"
    assert run.tasks["slow"].duration < 30


def test_secret_values_are_masked_everywhere(workdir: Path, monkeypatch):
    value = "s3cr3t-Value-123"
    monkeypatch.setenv("API_TOKEN", value)
    write_notebook(workdir / "leaky.ipynb",
                   "import nborch\ntoken = nborch.secret('API_TOKEN')\nprint('token is', token)\n"
                   "nborch.publish('echo', token)\nnborch.publish('length', len(token))",
                   "token")
    write_notebook(workdir / "raiser.ipynb",
                   "import os\nraise ValueError('cannot connect with ' + os.environ['API_TOKEN'])")
    p = Pipeline("secrets", secrets=["API_TOKEN"])
    p.notebook("leaky.ipynb")
    p.notebook("raiser.ipynb")
    run = p.run()
    assert run.tasks["leaky"].status == "success"
    assert run.values["leaky"] == {"echo": "***", "length": len(value)}
    assert run.tasks["raiser"].error["message"] == "cannot connect with ***"
    for path in (workdir / ".nborch").rglob("*"):
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path
    executed = (workdir / ".nborch" / "runs" / run.run_id / "leaky.ipynb").read_text()
    assert "token is ***" in executed


def test_cancel_stops_kernels_and_records_states(workdir: Path):
    import time
    pids = workdir / "pids"
    pids.mkdir()
    for name in ("a", "b"):
        write_notebook(workdir / f"{name}.ipynb",
                       "import os, time\n"
                       f"open({str(pids)!r} + '/' + str(os.getpid()), 'w').close()\n"
                       "time.sleep(120)")
    write_notebook(workdir / "c.ipynb", "pass")
    p = Pipeline("cancel")
    p.notebook("c.ipynb", upstream=[p.notebook("a.ipynb"), p.notebook("b.ipynb")])
    handle = p.start(max_parallel=2)
    deadline = time.monotonic() + 60
    while len(list(pids.iterdir())) < 2:
        assert time.monotonic() < deadline, "kernels did not start"
        time.sleep(0.05)
    handle.cancel()
    run = handle.wait(timeout=60)
    assert run.status == "cancelled"
    assert {n: t.status for n, t in run.tasks.items()} == {"a": "cancelled", "b": "cancelled",
                                                         "c": "cancelled"}
    for pid_file in pids.iterdir():
        pid = int(pid_file.name)
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, f"kernel {pid} still running"
            time.sleep(0.05)
    stored = Store(workdir / ".nborch").get_run(run.run_id)
    assert stored.status == "cancelled"


def _alive(pid: int) -> bool:
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_four_tasks_run_together_with_max_parallel_4(workdir: Path):
    # Each task waits at a barrier until all four have reached it: only tasks running at
    # the same moment get through (one left alone fails at the barrier's deadline).
    barrier = workdir / "barrier"
    barrier.mkdir()
    for i in range(4):
        write_notebook(workdir / f"t{i}.ipynb",
                       f"import pathlib, time\nhere = pathlib.Path({str(barrier)!r})\n"
                       f"(here / 't{i}').touch()\ndeadline = time.monotonic() + 120\n"
                       "while len(list(here.iterdir())) < 4:\n"
                       "    assert time.monotonic() < deadline, 'the other tasks never ran'\n"
                       "    time.sleep(0.02)")
    p = Pipeline("parallel")
    for i in range(4):
        p.notebook(f"t{i}.ipynb")
    run = p.run(max_parallel=4)
    assert run.ok, {name: t.error for name, t in run.tasks.items() if t.error}


def test_max_parallel_1_runs_one_at_a_time(workdir: Path):
    running: set[str] = set()
    at_once = []  # how many tasks ran after each state change, as the engine announced it

    def follow(event):
        if isinstance(event, TaskStateChanged):
            (running.add if event.state == "running" else running.discard)(event.task)
            at_once.append(len(running))

    for i in range(3):
        write_notebook(workdir / f"s{i}.ipynb",
                       "import time, nborch\nstart = time.time()\n"
                       "nborch.publish('span', [start, time.time()])")
    p = Pipeline("serial")
    for i in range(3):
        p.notebook(f"s{i}.ipynb")
    run = p.run(max_parallel=1, listeners=[follow])
    assert max(at_once) == 1
    spans = sorted(run.values[f"s{i}"]["span"] for i in range(3))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_kernel_choice_task_wins_then_kernelspec_then_python3(workdir: Path):
    write_notebook(workdir / "nospec.ipynb", "import nborch\nnborch.publish('ok', 1)",
                   kernelspec=False)
    odd = write_notebook(workdir / "odd.ipynb", "import nborch\nnborch.publish('ok', 2)")
    nb = nbformat.read(odd, as_version=4)
    nb.metadata.kernelspec = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    nbformat.write(nb, str(odd))
    p = Pipeline("kern")
    p.notebook("nospec.ipynb")
    p.notebook("odd.ipynb", kernel="python3")
    run = p.run()
    assert run.status == "success"
    assert run.values == {"nospec": {"ok": 1}, "odd": {"ok": 2}}


def test_an_edited_source_notebook_is_read_anew_and_each_attempt_gets_its_own_copy(
        workdir: Path):
    from nborch.execution.papermill_engine import _load
    path = workdir / "nb.ipynb"
    write_notebook(path, "x = 1")
    first = _load(str(path))
    first.cells[0].source = "changed by an attempt"
    assert _load(str(path)).cells[0].source == "x = 1"
    write_notebook(path, "y = 22")  # another size: another file, whatever the clock says
    assert _load(str(path)).cells[0].source == "y = 22"
