"""Hooks with real receivers: an HTTP server and an SMTP server on 127.0.0.1, real commands."""

from __future__ import annotations

import email.policy
import json
import sys
import threading
from email import message_from_bytes
from pathlib import Path

import pytest
from conftest import Receiver, free_port, nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline


def failing_pipeline(folder: Path, **extra) -> Path:
    write_notebook(folder / "good.ipynb", "import nborch\nnborch.publish('rows', 3)")
    write_notebook(folder / "bad.ipynb", "x = 1", "raise ValueError('boom')")
    tasks = {"good": {"notebook": "good.ipynb"},
             "bad": {"notebook": "bad.ipynb", "upstream": ["good"], **extra.pop("bad", {})}}
    return write_pipeline(folder, {"name": "alerting", "tasks": tasks, **extra})


def test_webhook_and_command_hooks_tell_what_failed(workdir: Path, receiver: Receiver):
    marker = workdir / "command-env.json"
    command = [sys.executable, "-c", "import json, os, sys; json.dump({k: v for k, v in "
               "os.environ.items() if k.startswith('NBORCH_')}, open(sys.argv[1], 'w'))",
               str(marker)]
    path = failing_pipeline(
        workdir,
        on_failure=[{"webhook": receiver.url("/run"),
                     "secret_headers": {"X-Token": "HOOK_TOKEN"}, "headers": {"X-Team": "data"}},
                    {"command": command}],
        bad={"on_failure": [{"webhook": receiver.url("/task")}]})
    proc = nborch("run", str(path), "--json", cwd=workdir, env={"HOOK_TOKEN": "s3cr3t-token"})
    assert proc.returncode == 1, proc.stderr
    run = run_json(proc)
    [task_post] = receiver.answered("/task")
    [run_post] = receiver.answered("/run")
    assert run_post == {
        "hook": "on_failure", "pipeline": "alerting", "run_id": run["run_id"],
        "logical_date": run["logical_date"], "trigger": "manual", "status": "failed",
        "task": None,
        "reason": None, "error": None,
        "started_at": run["started_at"], "ended_at": run["ended_at"],
        # cell 3: `upstream` is injected in a cell of its own at the top of bad.ipynb
        "failed_tasks": [{"task": "bad", "error": {"type": "ValueError", "message": "boom",
                                                   "cell": 3}}],
        "output_paths": {"good": run["tasks"]["good"]["output_path"],
                         "bad": run["tasks"]["bad"]["output_path"]}}
    assert task_post["task"] == "bad" and task_post["status"] == "failed"
    assert list(task_post["output_paths"]) == ["bad"]
    headers = [p["headers"] for p in receiver.posts if p["path"] == "/run"][0]
    assert headers["X-Token"] == "s3cr3t-token" and headers["X-Team"] == "data"
    env = json.loads(marker.read_text())
    assert (env["NBORCH_HOOK"], env["NBORCH_STATUS"], env["NBORCH_FAILED_TASKS"],
            env["NBORCH_RUN_ID"]) == ("on_failure", "failed", "bad", run["run_id"])
    assert json.loads(env["NBORCH_PAYLOAD"]) == run_post
    # The header's secret value is written nowhere nborch writes.
    for file in (workdir / ".nborch").rglob("*"):
        if file.is_file():
            assert b"s3cr3t-token" not in file.read_bytes(), file
    log = (workdir / ".nborch" / "runs" / run["run_id"] / "hooks.log").read_text()
    assert log.count(": sent") == 3


def test_a_failing_hook_is_logged_and_never_fails_the_run(workdir: Path):
    flaky = Receiver(statuses=[503])  # the first request fails, the retry gets through
    write_notebook(workdir / "ok.ipynb", "pass")
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    path = write_pipeline(workdir, {"name": "fine", "tasks": {"ok": {"notebook": "ok.ipynb"}},
                                    "on_success": [{"webhook": dead, "retries": 1},
                                                   {"command": ["false"]},
                                                   {"webhook": flaky.url(), "retries": 2}]})
    proc = nborch("run", str(path), "--json", cwd=workdir)
    flaky.server.shutdown()
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert run["status"] == "success"
    assert [p["answered"] for p in flaky.posts] == [503, 200]
    log = (workdir / ".nborch" / "runs" / run["run_id"] / "hooks.log").read_text()
    # A webhook's path may be its credential: only its host is written.
    assert f"on_success webhook {dead.rsplit('/', 1)[0]}/...: FAILED" in log
    assert "on_success command false: FAILED: RuntimeError: exit code 1" in log
    assert f"on_success webhook {flaky.url().rsplit('/', 1)[0]}/...: sent" in log
    assert "nobody-listens" not in log


def test_email_hook_reaches_an_smtp_server(workdir: Path):
    from aiosmtpd.controller import Controller

    class Inbox:
        messages: list = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope)
            return "250 OK"

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        path = failing_pipeline(workdir, on_failure=[{"email": ["oncall@example.com"]}])
        proc = nborch("run", str(path), cwd=workdir, env={
            "NBORCH_SMTP_HOST": "127.0.0.1", "NBORCH_SMTP_PORT": str(port),
            "NBORCH_SMTP_FROM": "nborch@example.com"})
    finally:
        controller.stop()
    assert proc.returncode == 1
    [envelope] = inbox.messages
    assert envelope.rcpt_tos == ["oncall@example.com"]
    message = message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == "[nborch] alerting: failed"
    body = message.get_content()
    assert "pipeline alerting: failed" in body and "- bad: ValueError: boom (cell 3)" in body


def test_retry_hooks_and_python_callables_from_the_api(workdir: Path):
    counter = workdir / "tries"
    write_notebook(workdir / "flaky.ipynb",
                   f"import os\np = {str(counter)!r}\nn = int(open(p).read()) if os.path.exists(p)"
                   " else 0\nopen(p, 'w').write(str(n + 1))\nassert n >= 1, 'first try fails'")
    seen = []
    p = Pipeline("api_hooks", on_retry=[lambda doc: seen.append(("pipeline", doc))],
                 on_success=[lambda doc: seen.append(("run", doc))])
    p.notebook(workdir / "flaky.ipynb", retries=1, retry_delay="0s",
               on_retry=[lambda doc: seen.append(("task", doc))],
               on_success=[lambda doc: seen.append(("task-ok", doc))])
    run = p.run(home=workdir / ".nborch")
    assert run.status == "success"
    assert [kind for kind, _ in seen] == ["task", "pipeline", "task-ok", "run"]
    retry = seen[0][1]
    assert (retry["hook"], retry["task"], retry["status"]) == ("on_retry", "flaky", "retrying")
    assert retry["failed_tasks"][0]["error"]["message"] == "first try fails"
    assert seen[-1][1]["status"] == "success" and seen[-1][1]["failed_tasks"] == []


@pytest.mark.parametrize("hooks, message", [
    ([{"webhook": "ftp://x"}], "webhook must be an http:// or https:// URL"),
    ([{"command": "notify-send failed"}], "command must be a list of strings"),
    ([{"webhook": "http://x", "command": ["a"]}], "a hook needs exactly one of"),
    ([{"webhok": "http://x"}], "a hook needs exactly one of"),
    ([{"webhook": "http://x", "retry": 3}], "unknown key(s) 'retry' for a webhook hook"),
    ([{"email": "not-an-address"}], "email must be an address or a list of addresses"),
    ([{"webhook": "http://x", "secret_headers": {"X-Token": "NOT_SET_ANYWHERE"}}],
     "NOT_SET_ANYWHERE"),
    ([{"email": "oncall@example.com"}], "the hook needs 'NBORCH_SMTP_HOST'"),  # else lost
])
def test_bad_hooks_are_validation_errors(workdir: Path, hooks, message):
    path = failing_pipeline(workdir, on_failure=hooks)
    proc = nborch("run", str(path), cwd=workdir)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "on_failure" in proc.stderr
    assert not (workdir / ".nborch" / "nborch.db").exists()


def test_a_hanging_webhook_delays_no_other_hook(workdir: Path, receiver: Receiver):
    """Hooks are delivered side by side: the working webhook, listed after one that never
    answers, is received while the hanging request is still open."""
    import socket
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen()
    open_request = threading.Event()

    def hold() -> None:  # read the request, answer nothing, until the client gives up
        conn, _ = hanging.accept()
        open_request.set()
        while conn.recv(65536):
            pass
        open_request.clear()
        conn.close()
    threading.Thread(target=hold, daemon=True).start()
    seen_open: list[bool] = []

    class Watching(list):
        def append(self, post) -> None:
            seen_open.append(open_request.wait(15))
            super().append(post)
    receiver.posts = Watching()
    path = failing_pipeline(workdir, on_failure=[
        {"webhook": f"http://127.0.0.1:{hanging.getsockname()[1]}/hang", "timeout": "20s",
         "retries": 0},
        {"webhook": receiver.url("/works")}])
    proc = nborch("run", str(path), cwd=workdir)
    hanging.close()
    assert proc.returncode == 1, proc.stderr
    assert receiver.answered("/works") and seen_open == [True]
