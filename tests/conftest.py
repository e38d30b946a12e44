"""Fixtures that build real notebooks and pipelines in a temporary folder.

Tests run real kernels through real papermill and a real SQLite store; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def write_notebook(path: Path, *cells: str, parameters: str | None = None,
                   kernelspec: bool = True) -> Path:
    """A notebook whose first code cell is ``parameters`` (tagged) when given, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    if kernelspec:
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def ipc_kernel_manager(kernel_name: str = "python3"):
    """A kernel manager for a controlling notebook's kernel, on IPC sockets: kernels started
    at the same moment by parallel tests cannot race for TCP ports (papermill#511). Execute
    with ``cleanup_kc=True``: nbclient leaves a kernel it was given running otherwise."""
    import secrets
    import tempfile

    from jupyter_client.manager import AsyncKernelManager
    return AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(
        tempfile.gettempdir(), f"nborch-test-{secrets.token_hex(6)}"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernels_of(run_id: str) -> list:
    """The live processes (kernels, commands) started for run ``run_id``: they carry its id
    in their environment. Kernels forked from nborch's kernel template do not show their own
    environment to other processes (/proc keeps the template's), so every live kernel forked
    by a template this test started counts too."""
    import psutil
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("NBORCH_RUN_ID") == run_id and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found + [p for p in forked_kernels() if p not in found]


def _is_template(proc) -> bool:
    import psutil
    try:
        return ("nborch.execution.forkserver" in proc.cmdline()
                and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def kernel_templates() -> list:
    """Live kernel template processes (see nborch/execution/forkserver.py) this test started."""
    import psutil
    return [p for p in psutil.Process().children(recursive=True)
            if _is_template(p) and not _is_template(p.parent() or psutil.Process(1))]


def forked_kernels() -> list:
    """Live kernels forked from a kernel template this test started."""
    import psutil
    return [p for p in psutil.Process().children(recursive=True)
            if _is_template(p) and _is_template(p.parent() or psutil.Process(1))]


def write_pipeline(folder: Path, spec: dict, name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def nborch(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240,
           check: bool = False) -> subprocess.CompletedProcess:
    """Run the real ``nborch`` command in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    proc = subprocess.run([sys.executable, "-m", "nborch", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"nborch {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def run_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty project folder that is also the current folder (so the store is ./.nborch)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NBORCH_HOME", raising=False)
    return tmp_path


# -- shared by several test modules --------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST; ``statuses`` are answered in
    order (then 200)."""

    def __init__(self, statuses=()):
        self.posts: list[dict] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.posts.append({"path": self.path, "headers": dict(self.headers),
                                       "json": json.loads(body), "answered": status})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def answered(self, path: str) -> list[dict]:
        return [p["json"] for p in self.posts if p["path"] == path and p["answered"] == 200]


@pytest.fixture
def receiver():
    """A ``Receiver`` for one test."""
    r = Receiver()
    yield r
    r.server.shutdown()


def small_pipeline(folder: Path, name: str = "nightly", body: str = "pass", **extra) -> Path:
    write_notebook(folder / "job.ipynb", "import nborch\nnborch.publish('day', day)",
                   parameters="day = ''")
    write_notebook(folder / "after.ipynb", body)
    return write_pipeline(folder, {"name": name, "tasks": {
        "job": {"notebook": "job.ipynb", "parameters": {"day": "{{ ds }}"}},
        "after": {"notebook": "after.ipynb", "upstream": ["job"]}}, **extra})


def hanging_pipeline(folder: Path, **extra) -> Path:
    """A pipeline whose first task hangs (after creating the returned marker file) and whose
    second waits for it: for stopping a run that is busy."""
    started = folder / "started"
    write_notebook(folder / "hang.ipynb",
                   f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(300)")
    write_notebook(folder / "later.ipynb", "pass")
    write_pipeline(folder, {"name": "hangs", "tasks": {
        "hang": {"notebook": "hang.ipynb"},
        "later": {"notebook": "later.ipynb", "upstream": ["hang"]}}, **extra})
    return started


def start_hanging_run(workdir: Path, **extra) -> subprocess.Popen:
    """``nborch run`` of ``hanging_pipeline`` (with ``extra`` pipeline keys) in a process of
    its own, once its first task is running."""
    started = hanging_pipeline(workdir, **extra)
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", "pipeline.yaml"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    return proc


def start_scheduler(workdir: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    return subprocess.Popen([sys.executable, "-m", "nborch", "scheduler", *args], cwd=workdir,
                            env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(condition, what: str, timeout: float = 120) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_line(proc: subprocess.Popen, needle: str, deadline: float = 120) -> list[str]:
    """Lines of the process's stdout up to the first that holds ``needle``; fails once
    ``deadline`` seconds pass without it, even if the process prints nothing more. Reads the
    pipe a byte at a time, so what follows that line stays for ``communicate``."""
    import selectors
    lines, line, end = [], bytearray(), time.monotonic() + deadline
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := end - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            byte = os.read(fd, 1)
            if not byte:
                break  # the process closed its output
            line += byte
            if byte == b"\n":
                lines.append(line.decode(errors="replace"))
                line.clear()
                if needle in lines[-1]:
                    return lines
    raise AssertionError(f"{needle!r} not printed within {deadline:g}s; got {lines}")


# The kernel of a task runs under the worker process (forked from the worker's kernel
# template, a child of the worker): the first ancestor that is not the template says which.
WORKER_PID = ("import psutil\nworker = psutil.Process().parent()\n"
              "if 'nborch.execution.forkserver' in worker.cmdline():\n"
              "    worker = worker.parent()\n")
PUBLISH_WORKER = WORKER_PID + "import nborch\nnborch.publish('worker_pid', worker.pid)"
