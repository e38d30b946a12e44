"""What nborch keeps is its owner's only: the home (0700 folders, 0600 files), the kernel
template's socket (a private folder, and the peer's uid checked), and a command's values
file, which never lands in the shared temporary folder, even when nborch is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nborch, run_json, small_pipeline, write_notebook, write_pipeline

PY = sys.executable


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def wait_for(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def nborch_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("nborch"))


def assert_private(home: Path, user_files: Path | None = None) -> None:
    """Every folder under ``home`` is 0700 and every file 0600 (except what a task wrote
    itself under ``user_files``: the folders around it keep it private)."""
    assert mode(home) == 0o700
    for path in home.rglob("*"):
        if path.is_dir():
            assert mode(path) == 0o700, path
        elif user_files is None or user_files not in path.parents:
            assert mode(path) == 0o600, path


def test_the_home_and_all_in_it_are_private_to_its_owner(workdir: Path):
    tmp = workdir / "tmp"
    tmp.mkdir()
    write_notebook(workdir / "nb.ipynb", "import nborch\nnborch.publish('rows', 3)\n"
                   "nborch.artifact_path('plots/a.txt').write_text('x')")
    path = write_pipeline(workdir, {"name": "private", "tasks": {
        "nb": {"notebook": "nb.ipynb"},
        "cmd": {"command": [PY, "-c", "import sys, nborch; nborch.publish('n', 1); "
                            "open(sys.argv[1], 'w').write('p')", "{{ product }}"],
                "product": "out/cmd.txt", "upstream": ["nb"]}},
        "on_success": [{"command": [PY, "-c", "pass"]}]})
    proc = nborch("run", str(path), "--json", cwd=workdir, env={"TMPDIR": str(tmp)}, check=True)
    run = run_json(proc)
    assert run["tasks"]["cmd"]["values"] == {"n": 1}
    home, run_dir = workdir / ".nborch", workdir / ".nborch" / "runs" / run["run_id"]
    names = {p.name for p in home.rglob("*")}
    assert {"nborch.db", run["run_id"], "nb.ipynb", "nb.log", "cmd.log", "hooks.log",
            "artifacts", "plots", "a.txt"} <= names, names
    assert not list(run_dir.glob("*values*")), "the values file is deleted after reading"
    assert_private(home, user_files=run_dir / "artifacts")

    # The scheduler's lock file lives in the home too.
    from nborch.scheduling.scheduler import Scheduler
    scheduler = Scheduler(home, say=lambda message: None)
    scheduler.acquire()
    scheduler._lock_file.close()
    assert mode(home / "scheduler.lock") == 0o600

    # What tasks write to their own products keeps the umask; nborch did not change it.
    umask = os.umask(0)
    os.umask(umask)
    assert mode(workdir / "out" / "cmd.txt") == 0o666 & ~umask
    assert mode(workdir / "out") == 0o777 & ~umask
    # The kernel template's and the kernels' IPC folders went with the process.
    assert nborch_files(tmp) == []


def test_a_home_left_open_by_an_older_nborch_is_closed(workdir: Path):
    path = small_pipeline(workdir)
    run = run_json(nborch("run", str(path), "--json", cwd=workdir, check=True))
    home = workdir / ".nborch"
    for folder in (home, home / "runs", home / "runs" / run["run_id"]):
        os.chmod(folder, 0o755)
    os.chmod(home / "nborch.db", 0o644)
    nborch("runs", cwd=workdir, check=True)
    # The home itself is enough: what is inside cannot be reached through it.
    assert mode(home) == 0o700 and mode(home / "nborch.db") == 0o600


def _connect_as_nobody(path: str, request: dict) -> dict:
    """In a forked child as uid 65534: connect to the template's socket and send a
    request; what happened, as a dict."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        result: dict = {"failed": "before setuid"}
        try:
            os.close(read_end)
            os.setuid(65534)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(path)
            except OSError as exc:
                result = {"refused": type(exc).__name__}
            else:
                try:
                    conn.sendall(json.dumps(request).encode() + b"\n")
                    conn.settimeout(30)
                    result = {"reply": conn.recv(4096).decode()}
                except (ConnectionResetError, BrokenPipeError):  # closed with the request unread
                    result = {"reply": ""}
        except BaseException as exc:
            result = {"failed": repr(exc)}
        finally:
            os.write(write_end, json.dumps(result).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return result


def test_the_kernel_template_serves_its_own_user_only(workdir: Path):
    if os.geteuid() != 0:
        pytest.skip("needs root, to connect as another user")
    import psutil

    from nborch.execution.forking import KernelTemplate
    template = KernelTemplate()
    try:
        assert template._ready.wait(60) and not template._failed, template._failed
        folder = Path(template.path).parent
        assert mode(folder) == 0o700 and folder.name.startswith("nborch-fork-")
        request = {"argv": ["--version"], "cwd": str(workdir), "env": {}}
        assert _connect_as_nobody(template.path, request) == {"refused": "PermissionError"}

        # Were the folder opened up, the template still serves nobody but its own user.
        os.chmod(folder, 0o755)
        os.chmod(template.path, 0o777)
        assert _connect_as_nobody(template.path, request) == {"reply": ""}
        assert psutil.Process(template._process.pid).children() == []

        # Its own user is served (ipykernel prints its version and exits).
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(template.path)
        conn.sendall(json.dumps(request).encode() + b"\n")
        with conn, conn.makefile("rb") as replies:
            assert "pid" in json.loads(replies.readline())
            assert "exit" in json.loads(replies.readline())
    finally:
        template.close()
    assert not folder.exists()


def test_kernel_ipc_sockets_are_in_a_private_folder():
    from nborch.execution.kernels import _ipc_prefix
    prefix = Path(_ipc_prefix())
    assert mode(prefix.parent) == 0o700 and prefix.parent.name.startswith("nborch-ipc-")
    assert Path(_ipc_prefix()).parent == prefix.parent  # one folder per process


def test_a_killed_run_leaves_no_values_file_in_the_temporary_folder(workdir: Path):
    tmp, started = workdir / "tmp", workdir / "started"
    tmp.mkdir()
    script = workdir / "slow.py"
    script.write_text(
        "import os, sys, time, nborch\n"
        "nborch.publish('token', 'not masked yet')\n"
        f"open({str(started)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n")
    path = write_pipeline(workdir, {"name": "killed", "tasks": {
        "slow": {"command": [PY, str(script)]}}})
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    proc = subprocess.Popen([PY, "-m", "nborch", "run", str(path)], cwd=workdir,
                            env={**env, "TMPDIR": str(tmp)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    command_pid = None
    try:
        wait_for(lambda: started.exists() and started.read_text(), "the command to publish")
        command_pid = int(started.read_text())
        [values] = (workdir / ".nborch" / "runs").glob("*/slow.attempt-1.values.jsonl")
        assert "not masked yet" in values.read_text() and mode(values) == 0o600
        assert nborch_files(tmp) == []
        os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator, with no chance to clean up
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if command_pid is not None:  # it runs in a session of its own
            os.kill(command_pid, signal.SIGKILL)
    assert nborch_files(tmp) == []
    assert_private(workdir / ".nborch")  # the values file stays, in the private home
