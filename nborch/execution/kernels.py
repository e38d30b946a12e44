"""Kernels for task attempts, started by the thread that will run the attempt.

nbclient and jupyter_client bind a kernel's client to the event loop of the thread that
made it, so a kernel started ahead of need (warm) lives in a thread of its own, which later
runs the attempt on it. Every attempt gets a fresh kernel; a kernel never serves twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from ..core.secrecy import task_environment

STARTUP_TIMEOUT = 60.0
IPC_BASE_MAX = 60  # characters of the folder for IPC sockets (a socket path has 107 at most)
IOPUB_LOOK = 0.02  # seconds to wait for an iopub message before asking again
# The variables of a kernel's environment that name its attempt (see runtime.jobs.Jobs.env):
# a kernel started ahead for another attempt of the same kind takes them as it is handed
# over (``Kernel.adopt``); nothing reads them as the process starts.
ATTEMPT_VARIABLES = ("NBORCH_TASK", "NBORCH_ATTEMPT", "NBORCH_ARTIFACT_DIR")


@dataclass(frozen=True)
class KernelRequest:
    """Everything a task's kernel must be started with; equal requests are interchangeable."""
    name: str
    cwd: str
    env: dict = field(default_factory=dict, repr=False, hash=False)  # on top of nborch's own
    withheld: frozenset = frozenset()  # names of nborch's environment the kernel must not get

    def same_as(self, other: KernelRequest) -> bool:
        return ((self.name, self.cwd, self.env, self.withheld)
                == (other.name, other.cwd, other.env, other.withheld))

    def same_kind(self, other: KernelRequest) -> bool:
        """The same but for the variables naming the attempt (``ATTEMPT_VARIABLES``): a
        kernel started for one serves the other once it adopted them. Secrets, the run,
        the task's own ``env`` must be equal."""
        return ((self.name, self.cwd, _kind_env(self.env), self.withheld)
                == (other.name, other.cwd, _kind_env(other.env), other.withheld))


def _kind_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in ATTEMPT_VARIABLES}


_ipc_folders: dict[int, str] = {}  # pid -> that process's private folder for IPC sockets
_ipc_lock = threading.Lock()


def _ipc_prefix() -> str:
    """An absolute, unique path prefix for a kernel's IPC sockets (client and kernel run in
    different folders, so a relative one would not meet), in a folder only this user may
    open (0700), one per process, removed at exit. Short: socket paths are limited to about
    100 bytes."""
    import secrets
    with _ipc_lock:
        folder = _ipc_folders.get(os.getpid())
        if folder is None:
            import atexit
            import tempfile
            base = tempfile.gettempdir()
            if len(base) > IPC_BASE_MAX and os.path.isdir("/tmp"):
                base = "/tmp"  # a deep $TMPDIR would make socket paths too long to bind
            folder = _ipc_folders[os.getpid()] = tempfile.mkdtemp(prefix="nborch-ipc-", dir=base)
            atexit.register(_remove_ipc_folder, os.getpid(), folder)
    return os.path.join(folder, secrets.token_hex(4))


_contexts: dict[int, object] = {}  # pid -> that process's zmq context for kernel sockets


def _zmq_context():
    """One zmq context for every kernel of this process (a forked child makes its own).
    jupyter_client gives each kernel manager and each client a context of their own, each
    with I/O threads started and stopped for every attempt."""
    import zmq
    import zmq.asyncio
    with _ipc_lock:
        context = _contexts.get(os.getpid())
        if context is None:
            context = _contexts[os.getpid()] = zmq.asyncio.Context()
            context.linger = 100  # a socket closed with messages to a dead kernel: no hang
    return context


def _remove_ipc_folder(pid: int, folder: str) -> None:
    if os.getpid() == pid:  # not in a forked child, whose parent still uses it
        import shutil
        shutil.rmtree(folder, ignore_errors=True)


async def _await_ready(km, kc, timeout: float) -> dict:
    """Return the kernel's ``kernel_info_reply`` content once the kernel answers on its
    shell channel and its iopub messages reach us.

    jupyter_client's ``wait_for_ready`` does the same, but gives iopub 0.2 s per try and
    usually needs a second try (the first status messages go out before our subscription
    is in place): about 0.25 s of every start spent waiting. Trying again at once after a
    short look costs a few more kernel_info round trips instead.
    """
    import time
    from queue import Empty
    deadline = time.monotonic() + timeout
    while True:
        kc.kernel_info()
        try:
            reply = await kc.get_shell_msg(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        except Empty:
            reply = None
        if reply is not None and reply["msg_type"] == "kernel_info_reply":
            try:
                await kc.get_iopub_msg(timeout=IOPUB_LOOK)
                return reply["content"]
            except Empty:
                pass
        if not await km.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


class Kernel:
    """A kernel process and its connected client. ``start`` and ``shutdown`` must run in
    the owning thread; ``kill`` may be called from any thread."""

    def __init__(self, request: KernelRequest, forker=None):
        self.request = request
        self.forker = forker  # a forking.KernelForker to fork the kernel with, if it can
        self.km = None
        self.kc = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.process = None
        self.forked = False  # forked from a kernel template (see forking.py)
        self.how = "started the usual way"  # once started: forked, or why not
        self.streams_split = False  # sends stream output in pieces already (limits.PIECE)
        self.info: dict = {}  # its kernel_info_reply's content (language_info, ...)
        self._stderr_lock = threading.Lock()
        self._stderr_sink = None
        self._stderr_early: list[str] = []

    def start(self, timeout: float = STARTUP_TIMEOUT, meanwhile=None) -> None:
        """Start the kernel and wait until it answers; ``meanwhile()`` is called while the
        kernel process starts up (to import what the attempt will need, say)."""
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        # IPC sockets: no TCP ports to pick, so no port race between kernels started at once
        # (papermill#511), and nothing listening on the network.
        context = _zmq_context()
        shared = {"kernel_spec_manager": self.forker.spec_manager()} if self.forker else {}
        km = AsyncKernelManager(kernel_name=self.request.name, transport="ipc",
                                ip=_ipc_prefix(), context=context, **shared)
        if self.forker is not None:
            import uuid

            from .forking import provisioner_for
            km.kernel_id = str(uuid.uuid4())
            km.provisioner = provisioner_for(km, self.forker)
        extra = ["--IPKernelApp.log_level=ERROR"] if km.ipykernel else []  # no start-up chatter
        env = task_environment(self.request.env, self.request.withheld)
        run_sync(km.start_kernel)(cwd=self.request.cwd, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  extra_arguments=extra)
        self.km = km
        provisioner = km.provisioner
        self.process = getattr(provisioner, "process", None)
        self.pid = getattr(provisioner, "pid", None)
        self.pgid = getattr(provisioner, "pgid", None) or self.pid
        if self.forker is not None:  # a forked kernel split its output as it started
            from .forking import ForkedKernel
            self.forked = self.streams_split = isinstance(self.process, ForkedKernel)
            self.how = "forked from a kernel template" if self.forked else \
                (provisioner.not_forked or self.how)
        if self.process is not None and self.process.stderr is not None:
            threading.Thread(target=self._drain, daemon=True).start()
        kc = km.client(context=context)
        # nbclient uses the shell and iopub channels only; the kernel's liveness comes from
        # its process (the manager), not a heartbeat thread.
        kc.start_channels(stdin=False, hb=False, control=False)
        try:
            if meanwhile is not None:
                meanwhile()
            self.info = run_sync(_await_ready)(km, kc, timeout)
        except Exception:
            _stop_channels(kc)
            raise
        kc.allow_stdin = False
        self.kc = kc

    def adopt(self, request: KernelRequest, timeout: float = STARTUP_TIMEOUT) -> None:
        """Give this started kernel the attempt variables of ``request``, a request of the
        same kind as its own (a warm kernel handed to the next attempt). In the owning
        thread, before the attempt runs."""
        if not request.same_kind(self.request):
            raise ValueError("a kernel serves only a request of the kind it was started for")
        wanted = {k: request.env.get(k) for k in ATTEMPT_VARIABLES}
        changed = {k: v for k, v in wanted.items() if v != self.request.env.get(k)}
        if changed:
            from jupyter_core.utils import run_sync
            code = ("import os as _nborch_os\n"
                    f"for _k, _v in {changed!r}.items():\n"
                    "    _nborch_os.environ.pop(_k, None) if _v is None else "
                    "_nborch_os.environ.__setitem__(_k, _v)\n"
                    "del _nborch_os, _k, _v")
            sent = self.kc.execute(code, silent=True, store_history=False)
            while True:
                reply = run_sync(self.kc.get_shell_msg)(timeout=timeout)
                if reply["parent_header"].get("msg_id") == sent:
                    break
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"the warm kernel did not take the attempt's variables: "
                                   f"{reply['content'].get('evalue', '')}")
        self.request = request

    def attach_stderr(self, sink) -> None:
        """Send what the kernel process writes to stderr (crash messages) to ``sink``."""
        with self._stderr_lock:
            self._stderr_sink = sink
            early, self._stderr_early = self._stderr_early, []
        for text in early:
            sink.write(text)

    def _drain(self) -> None:
        for raw in iter(self.process.stderr.readline, b""):
            text = raw.decode("utf-8", "replace")
            with self._stderr_lock:
                sink = self._stderr_sink
                if sink is None:
                    self._stderr_early.append(text)
            if sink is not None:
                sink.write(text)
        self.process.stderr.close()

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.pgid:
            try:
                os.killpg(self.pgid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync
        if self.kc is not None:
            _stop_channels(self.kc)
            self.kc = None
        if self.km is not None:
            try:
                run_sync(self.km.shutdown_kernel)(now=True)
            except Exception:  # already dead; make sure the group is gone
                self.kill()
            run_sync(self.km.cleanup_resources)()
            self.km = None
        _close_thread_loop()


def _stop_channels(kc) -> None:
    """``kc.stop_channels()`` for the channels ``start`` opened (that method would make the
    others, sockets included, only to find them not running)."""
    for channel in (kc.shell_channel, kc.iopub_channel):
        if channel.is_alive():
            channel.stop()


def _close_thread_loop() -> None:
    """Close the event loop jupyter_client's calls made for this thread (the thread ends
    with its kernel; an unclosed loop keeps its selector and self-pipe open)."""
    import asyncio
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)
