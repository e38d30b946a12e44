"""Kernels forked from a template process that has already imported ipykernel.

Starting a Python kernel costs about 0.5 CPU-seconds, four fifths of it importing
ipykernel, IPython, zmq and tornado. On a small machine that CPU is what a pipeline of
short notebooks waits for. The template (``python -m nborch.execution.forkserver``) imports them
once; each kernel is then a ``fork()`` of it that applies the task's working directory,
environment and arguments and runs ipykernel's app as ``python -m ipykernel_launcher``
would. Each kernel is still a process of its own, with nothing of another task in it:
the template never runs user code, and is single-threaded so that forking it is safe.

Only kernels whose kernelspec is ipykernel on this very Python use it (the default
``python3`` kernel); any other kernel is started the usual way. The template exits when
the process that started it closes its stdin or dies, and its kernels exit with it
(ipykernel's parent poller), so a killed orchestrator leaves nothing behind.

The template's socket is in a folder of its own that only its owner may open (0700), and
the template serves connections from its own user only (checked with ``SO_PEERCRED``):
whoever can connect may run any command line with any environment.

Protocol, over a Unix socket: the client sends one JSON line (argv, cwd, env) with the
write end of a pipe for the kernel's stderr attached (SCM_RIGHTS); the template answers
``{"pid": N}`` and, when that kernel exits, ``{"exit": CODE}`` (negative: killed by that
signal, as ``Popen.returncode``), then closes the connection.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading

log = logging.getLogger("nborch")
READY = b"nborch-forkserver ready\n"
START_TIMEOUT = 60.0
# What a kernel imports before it runs any code (measured: a kernel that starts after these
# imports nothing more). None of them starts a thread, so the template stays fork-safe.
PRELOAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
           "IPython.core.debugger", "IPython.core.completerlib", "IPython.extensions.storemagic",
           "sqlite3", "tornado.queues", "tornado.platform.asyncio")


class KernelTemplate:
    """The orchestrator's handle on one template process (started at once, in the
    background; ``spawn`` waits until it is ready)."""

    def __init__(self, python: str = sys.executable):
        import tempfile
        self.python = python
        self.folder = tempfile.mkdtemp(prefix="nborch-fork-")  # 0700: for this user only
        self.path = os.path.join(self.folder, "sock")
        self._process = subprocess.Popen(
            [python, "-m", "nborch.execution.forkserver", self.path], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
            cwd="/", env=_template_environment())
        self._ready = threading.Event()
        self._failed: str | None = None
        threading.Thread(target=self._await_ready, name="nborch-forkserver", daemon=True).start()

    def _await_ready(self) -> None:
        line = self._process.stdout.readline()
        if line != READY:
            self._failed = f"the kernel template did not start (exit code {self._process.poll()})"
        self._ready.set()

    def serves(self, argv: list[str]) -> bool:
        """Whether a kernel with this command line can be forked from the template."""
        return (not self._failed and len(argv) >= 3 and argv[0] == self.python
                and argv[1:3] == ["-m", "ipykernel_launcher"])

    def spawn(self, argv: list[str], cwd: str | None, env: dict) -> "ForkedKernel":
        if not self._ready.wait(START_TIMEOUT):
            self._failed = f"the kernel template did not start in {START_TIMEOUT:g}s"
        if self._failed:
            raise OSError(self._failed)
        read_end, write_end = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            request = {"argv": argv[3:], "cwd": cwd or os.getcwd(), "env": env}
            socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [write_end])
            reply = conn.makefile("rb", buffering=0).readline()  # unbuffered: leave the exit line
            pid = json.loads(reply)["pid"]
        except (OSError, ValueError, KeyError) as exc:
            conn.close()
            os.close(read_end)
            raise OSError(f"the kernel template failed to fork a kernel: {exc}") from None
        finally:
            os.close(write_end)
        return ForkedKernel(pid, conn, os.fdopen(read_end, "rb"))

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()  # the template exits at EOF
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)  # the template removes it; unless killed


class ForkedKernel:
    """A forked kernel process, with what jupyter_client uses of ``subprocess.Popen``."""

    stdin = stdout = None

    def __init__(self, pid: int, conn: socket.socket, stderr):
        self.pid = pid
        self.returncode: int | None = None
        self.stderr = stderr
        self._conn = conn
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
        return code

    def _collect(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is None:
                ready, _, _ = select.select([self._conn], [], [], timeout)
                if ready:
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = self._conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    try:
                        self.returncode = int(json.loads(data.splitlines()[-1])["exit"])
                    except (ValueError, KeyError, IndexError):
                        self.returncode = -signal.SIGKILL  # the template itself died
                    self._conn.close()
            return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def provisioner_for(km, template: KernelTemplate):
    """A jupyter_client provisioner that launches ``km``'s kernel through ``template``
    when it can (else the usual way)."""
    provisioner = _provisioner_class()(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec,
                                       parent=km)
    provisioner.template = template
    return provisioner


@functools.lru_cache(maxsize=1)
def _provisioner_class():
    from jupyter_client.provisioning import LocalProvisioner

    class ForkProvisioner(LocalProvisioner):
        template: KernelTemplate

        async def launch_kernel(self, cmd, **kwargs):
            if not self.template.serves(cmd):
                return await super().launch_kernel(cmd, **kwargs)
            env = dict(kwargs.get("env") or os.environ)
            try:
                self.process = self.template.spawn(cmd, kwargs.get("cwd"), env)
            except OSError as exc:  # no template after all: start the kernel as usual
                log.warning("starting kernels the usual way: %s", exc)
                return await super().launch_kernel(cmd, **kwargs)
            self.pid = self.pgid = self.process.pid  # the kernel leads its own session
            self.cwd = kwargs.get("cwd")
            return self.connection_info

    return ForkProvisioner


# -- the template process -----------------------------------------------------------------

def serve(path: str) -> None:
    import importlib
    import selectors
    for module in PRELOAD:  # the point of it all
        importlib.import_module(module)
    assert threading.active_count() == 1, "a preloaded module started a thread: forking is unsafe"
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # as ipykernel_launcher does; the kernel adds its own folder back
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through wake_w
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    selector.register(sys.stdin.buffer, selectors.EVENT_READ, "stdin")
    kernels: dict[int, socket.socket] = {}  # pid -> the connection that asked for it
    resources = [listener, wake_r, wake_w, selector]
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    while True:
        for key, _ in selector.select():
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    return  # the orchestrator is gone or done
            elif key.data == "child":
                try:
                    wake_r.recv(4096)
                except BlockingIOError:
                    pass
                _reap(kernels)
            else:
                conn, _ = listener.accept()
                if _peer_uid(conn) in (None, os.geteuid()):
                    _fork_kernel(conn, kernels, resources)
                else:  # another user got past the folder's mode: serve nothing
                    conn.close()
        _reap(kernels)  # a SIGCHLD can arrive between a wake-up and its handling


def _peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process that connected, where the system says (Linux: struct ucred,
    pid, uid, gid); elsewhere the folder's mode alone keeps other users out."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    ucred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", ucred)[1]


def _fork_kernel(conn: socket.socket, kernels: dict, resources: list) -> None:
    try:
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 1)
        request = json.loads(message)
    except (OSError, ValueError):
        conn.close()
        return
    stderr_fd = fds[0] if fds else None
    pid = os.fork()
    if pid == 0:
        for resource in resources + list(kernels.values()) + [conn]:
            resource.close()
        _become_kernel(request, stderr_fd)  # never returns
    if stderr_fd is not None:
        os.close(stderr_fd)
    kernels[pid] = conn
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def _reap(kernels: dict) -> None:
    while kernels:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = kernels.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode()
                             + b"\n")
            except OSError:
                pass
            conn.close()


def _template_environment() -> dict[str, str]:
    """What the template needs to import ipykernel, and nothing else: a forked kernel gets
    its task's environment, but ``/proc/self/environ`` still shows the template's, so that
    must hold no secret of any task (nor nborch's credentials)."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV", "CONDA_PREFIX")
    return {k: v for k, v in os.environ.items()
            if k in keep or k.startswith(("PYTHON", "LC_"))}


def _become_kernel(request: dict, stderr_fd: int | None) -> None:
    """In the forked child: become ``python -m ipykernel_launcher ARGV`` in the task's
    folder and environment."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # its own process group: cancel and timeout kill the whole group
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(stderr_fd if stderr_fd is not None else null, 2)
        os.close(null)
        if stderr_fd is not None:
            os.close(stderr_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:0] = [p for p in extra if p not in sys.path]
        import random
        random.seed()  # not the template's state
        from ipykernel import kernelapp
        sys.argv = [kernelapp.__file__, *request["argv"]]
        # The parent poller ends the kernel when the template (its parent) dies.
        kernelapp.launch_new_instance(argv=[*request["argv"],
                                            f"--IPKernelApp.parent_handle={os.getppid()}"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        try:
            import atexit
            atexit._run_exitfuncs()  # what a normal exit runs (IPython's history, ...)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    try:
        serve(sys.argv[1])
    finally:  # however it ends, also when the orchestrator was gone before READY (EPIPE)
        import contextlib
        with contextlib.suppress(OSError):
            os.unlink(sys.argv[1])
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(sys.argv[1]))  # the private folder KernelTemplate made
