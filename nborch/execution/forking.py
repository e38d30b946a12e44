"""The orchestrator's side of forked kernels: a template process per set of interpreter
options (``KernelTemplate``), kernels forked from it (``ForkedKernel``), the choice of which
kernels to fork (``KernelForker``, by ``forkplan``), jupyter_client's provisioner for them, and
templates started early by the command line. Why and how: see ``forkserver`` (the template
process itself).
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
import subprocess
import sys
import threading

from .forkplan import (
    fork_plan,
    kernelspec_command,
    same_python,
    split_kernel_command,
    template_environment,
)
from .forkserver import READY

log = logging.getLogger("nborch")
START_TIMEOUT = 60.0


class KernelTemplate:
    """The orchestrator's handle on one template process (started at once, in the
    background; ``spawn`` waits until it is ready)."""

    def __init__(self, python: str = sys.executable, options: tuple[str, ...] = ()):
        import tempfile
        self.python = python
        self.options = tuple(options)  # the interpreter's, as the kernelspec gives them
        self.folder = tempfile.mkdtemp(prefix="nborch-fork-")  # 0700: for this user only
        self.path = os.path.join(self.folder, "sock")
        self.environment = template_environment()
        self._process = subprocess.Popen(
            [python, *self.options, "-m", "nborch.execution.forkserver", self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd="/", env=self.environment)
        self._ready = threading.Event()
        self._failed: str | None = None
        threading.Thread(target=self._await_ready, name="nborch-forkserver", daemon=True).start()

    def _await_ready(self) -> None:
        line = self._process.stdout.readline()
        if line != READY:
            self._failed = f"the kernel template did not start (exit code {self._process.poll()})"
        self._ready.set()

    def spawn(self, arguments: list[str], cwd: str | None, env: dict) -> ForkedKernel:
        """Fork a kernel that runs as ``python OPTIONS -m ipykernel_launcher ARGUMENTS``
        would, in ``cwd`` with ``env``."""
        if not self._ready.wait(START_TIMEOUT):
            self._failed = f"the kernel template did not start in {START_TIMEOUT:g}s"
        if self._failed:
            raise OSError(self._failed)
        read_end, write_end = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            request = {"argv": list(arguments), "cwd": cwd or os.getcwd(), "env": env}
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

    def close(self, now: bool = False) -> None:
        """Stop the template (``now``: at once, even while it imports; else at its next
        look at its stdin); its kernels exit with it."""
        if self._process.poll() is None:
            if now:
                self._process.kill()
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


class KernelForker:
    """An executor's kernel templates, one per set of interpreter options, each started when
    a kernel first needs it (or ahead of need: ``prepare``), all stopped by ``close``. Says
    once per kernel name, on the "nborch" logger at INFO, whether its kernels are forked,
    and why not when they are not."""

    def __init__(self, python: str = sys.executable):
        self.python = python
        self._templates: dict[tuple[str, ...], KernelTemplate] = {}
        self._lock = threading.Lock()
        self._told: set[tuple] = set()
        self._closed = False
        self._same: dict[tuple, bool] = {}  # (argv[0], PATH) -> same_python's answer
        self._specs = None  # kernelspecs, each looked up once (see spec_manager)

    def spec_manager(self):
        """A jupyter_client KernelSpecManager that looks each kernelspec up once for the
        executor's kernels (jupyter_client makes a manager per kernel, which works out
        Jupyter's data folders and reads the kernelspec again for each)."""
        with self._lock:
            if self._specs is None:
                self._specs = _cached_specs_class()()
            return self._specs

    def template(self, options: tuple[str, ...] = ()) -> KernelTemplate:
        """The template for these interpreter options, started now if it is not yet."""
        with self._lock:
            if self._closed:
                raise OSError("the kernel templates are closed")
            template = self._templates.get(options)
            if template is None:
                template = self._templates[options] = KernelTemplate(self.python, options)
            return template

    def prepare(self, argv: list[str]) -> None:
        """Start the template a kernel with this (kernelspec) command line will be forked
        from, if any, before that kernel is asked for."""
        split = split_kernel_command(argv, self.python)
        if not isinstance(split, str):
            try:
                self.template(split[0])
            except OSError:  # closed already, or no process: the kernel will say so
                pass

    def prepare_kernel(self, name: str) -> None:
        """``prepare`` for the kernelspec ``name`` (a few milliseconds to look it up)."""
        self.prepare(kernelspec_command(name))

    def launch(self, name: str, argv: list[str], cwd: str | None,
               env: dict) -> ForkedKernel | str:
        """Fork the kernel ``name`` with this command line and environment, or say why it
        must be started the usual way (and say it once on the log)."""
        key = (argv[0] if argv else "", env.get("PATH"))
        same = self._same.get(key)
        if same is None:  # symlinks resolved once per run, not per kernel
            same = self._same[key] = bool(argv) and same_python(argv[0], self.python, key[1])
        options, arguments, why = fork_plan(argv, env, self.python, same=same)
        if options is not None:
            try:
                template = self.template(options)
                kernel = template.spawn(arguments, cwd, env)
            except OSError as exc:  # no template after all: start the kernel as usual
                self.tell(name, f"started the usual way: {exc}", logging.WARNING)
                return f"started the usual way: {exc}"
            command = " ".join([os.path.basename(self.python), *options])
            self.tell(name, f"forked from a kernel template ({command} -m ipykernel_launcher)")
            return kernel
        self.tell(name, f"started the usual way, not forked: {why}")
        return f"started the usual way, not forked: {why}"

    def tell(self, name: str, what: str, level: int = logging.INFO) -> None:
        with self._lock:
            if (name, what) in self._told:
                return
            self._told.add((name, what))
        log.log(level, "kernels %r: %s", name, what)

    def close(self, now: bool = False) -> None:
        with self._lock:
            self._closed = True
            templates, self._templates = list(self._templates.values()), {}
        for template in templates:
            template.close(now)


def provisioner_for(km, forker: KernelForker):
    """A jupyter_client provisioner that launches ``km``'s kernel through ``forker`` when
    it can (else the usual way)."""
    provisioner = _provisioner_class()(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec,
                                       parent=km)
    provisioner.forker = forker
    return provisioner


@functools.lru_cache(maxsize=1)
def _provisioner_class():
    from jupyter_client.provisioning import LocalProvisioner

    class ForkProvisioner(LocalProvisioner):
        forker: KernelForker
        not_forked = ""  # why its kernel was started the usual way

        async def launch_kernel(self, cmd, **kwargs):
            # kwargs["env"]: the task's environment with the kernelspec's "env" entries
            env = dict(kwargs.get("env") or os.environ)
            process = self.forker.launch(self.parent.kernel_name, cmd, kwargs.get("cwd"), env)
            if isinstance(process, str):
                self.not_forked = process
                return await super().launch_kernel(cmd, **kwargs)
            self.process = process
            self.pid = self.pgid = self.process.pid  # the kernel leads its own session
            self.cwd = kwargs.get("cwd")
            return self.connection_info

    return ForkProvisioner


@functools.lru_cache(maxsize=1)
def _cached_specs_class():
    from jupyter_client.kernelspec import KernelSpecManager

    class CachedSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            specs = self.__dict__.setdefault("_nborch_specs", {})
            spec = specs.get(kernel_name)
            if spec is None:
                spec = specs[kernel_name] = super().get_kernel_spec(kernel_name)
            return spec

    return CachedSpecs


_early: KernelForker | None = None
_early_lock = threading.Lock()


def start_early(kernels: list[str]) -> None:
    """Start now the templates that these kernels will be forked from, for this process's
    next ``take_early`` (the executor of its run): the command line starts one first thing,
    so that it imports ipykernel on another CPU while the command imports the rest and loads
    and checks the pipeline. Those nobody takes (an invalid pipeline) are stopped at exit."""
    global _early
    import atexit
    with _early_lock:
        if _early is None:
            _early = KernelForker()
            atexit.register(stop_early)
        forker = _early
    for name in kernels:
        forker.prepare_kernel(name)


def take_early() -> KernelForker | None:
    """The kernel templates ``start_early`` started, if nobody took them yet."""
    global _early
    with _early_lock:
        forker, _early = _early, None
    return forker


def stop_early() -> None:
    """Stop the templates ``start_early`` started, unless taken (no kernel will need them)."""
    forker = take_early()
    if forker is not None:
        forker.close(now=True)


