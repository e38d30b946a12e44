"""The template process kernels are forked from: it has already imported ipykernel.

Starting a Python kernel costs about 0.5 CPU-seconds, four fifths of it importing
ipykernel, IPython, zmq and tornado. On a small machine that CPU is what a pipeline of
short notebooks waits for. The template (``python -m nborch.execution.forkserver``) imports them
once; each kernel is then a ``fork()`` of it that applies the task's working directory,
environment and arguments and runs ipykernel's app as ``python -m ipykernel_launcher``
would. Each kernel is still a process of its own, with nothing of another task in it:
the template never runs user code, and is single-threaded so that forking it is safe.

Every kernel whose kernelspec runs ipykernel on this very Python is forked, however the
kernelspec was written (``ipykernel install --user``/``--sys-prefix``/``--prefix``, conda's,
``python`` or ``python3``, interpreter options such as ``-Xfrozen_modules=off``):
``forkplan.fork_plan`` decides, and says why not when it cannot; any other kernel is started the
usual way. A template is started with the interpreter options of the kernels it serves,
one template per set of options. The template exits when
the process that started it closes its stdin or dies, and its kernels exit with it
(ipykernel's parent poller), so a killed orchestrator leaves nothing behind.

The template's socket is in a folder of its own that only its owner may open (0700), and
the template serves connections from its own user only (checked with ``SO_PEERCRED``):
whoever can connect may run any command line with any environment.

Protocol, over a Unix socket: the client sends one JSON line (argv, cwd, env) with the
write end of a pipe for the kernel's stderr attached (SCM_RIGHTS); the template answers
``{"pid": N}`` and, when that kernel exits, ``{"exit": CODE}`` (negative: killed by that
signal, as ``Popen.returncode``), then closes the connection.

The orchestrator's side (starting templates, forking kernels, the provisioner) is
``forking``; this module is what runs inside the template.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import threading

READY = b"nborch-forkserver ready\n"
# What a kernel imports before it runs any code (measured: a kernel that starts after these
# imports nothing more). None of them starts a thread, so the template stays fork-safe.
PRELOAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
           "IPython.core.debugger", "IPython.core.completerlib", "IPython.extensions.storemagic",
           "sqlite3", "tornado.queues", "tornado.platform.asyncio", "nborch.execution.limits")


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
        import time
        time.tzset()  # TZ, as a process reads it when it starts
        if not sys.flags.ignore_environment:  # -E, -I: Python ignores PYTHONPATH
            extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            sys.path[:0] = [p for p in extra if p not in sys.path]
        import random
        random.seed()  # not the template's state
        from ipykernel import kernelapp

        from .limits import split_stream_output
        sys.argv = [kernelapp.__file__, *request["argv"]]
        # What launch_new_instance does, with the kernel's stream output split into pieces
        # before it starts (the orchestrator need not ask: see Kernel.streams_split). The
        # parent poller ends the kernel when the template (its parent) dies.
        app = kernelapp.IPKernelApp.instance()
        app.initialize([*request["argv"], f"--IPKernelApp.parent_handle={os.getppid()}"])
        split_stream_output()
        app.start()
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
