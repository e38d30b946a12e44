"""A Dask cluster of real processes for the tests: ``dask scheduler`` and ``dask worker``
on 127.0.0.1 (they import nborch as the tests do, through ``PYTHONPATH``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import free_port

distributed = pytest.importorskip("distributed")


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1; with ``tls`` (the files
    ``ca``, ``cert`` and ``key``), speaking TLS only."""

    def __init__(self, folder: Path, tls: dict | None = None):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        port = free_port()
        self.tls_args: tuple = ()
        security = None
        if tls is not None:
            self.tls_args = ("--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"],
                             "--tls-key", tls["key"])
            security = distributed.Security(tls_ca_file=tls["ca"], tls_client_cert=tls["cert"],
                                            tls_client_key=tls["key"], require_encryption=True)
        self.address = f"{'tls://' if tls else ''}127.0.0.1:{port}"
        self._start("scheduler", "--host", "127.0.0.1", "--port", str(port),
                    "--dashboard-address", ":0", *self.tls_args,
                    *(("--protocol", "tls") if tls else ()))
        self.client = distributed.Client(self.address, timeout="60s", security=security)

    def worker(self, *args: str, wrap: tuple = ()) -> None:
        """A worker process, started through the command ``wrap`` when given."""
        before = len(self.client.scheduler_info()["workers"])
        self._start("worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                    "--dashboard-address", ":0", *self.tls_args, *args, wrap=wrap)
        self.client.wait_for_workers(before + 1, timeout=60)

    def _start(self, *args: str, wrap: tuple = ()) -> None:
        self.procs.append(subprocess.Popen(
            [*wrap, str(Path(sys.executable).parent / "dask"), *args], cwd=self.folder,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def stop(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def forked_on_workers(client) -> list[int]:
    """The live kernels forked on the cluster's workers: children of their kernel templates
    (``python -m nborch.execution.forkserver``, children of the worker processes)."""
    found = []
    for worker in client.run(os.getpid).values():
        try:
            templates = [p for p in psutil.Process(worker).children()
                         if "nborch.execution.forkserver" in " ".join(p.cmdline())]
            found += [k.pid for t in templates for k in t.children()
                      if k.status() != psutil.STATUS_ZOMBIE]
        except psutil.Error:  # gone meanwhile
            pass
    return found
