"""A Dask cluster of real processes for the tests: ``dask scheduler`` and ``dask worker``
on 127.0.0.1 (they import nborch as the tests do, through ``PYTHONPATH``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

distributed = pytest.importorskip("distributed")


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self._start("scheduler", "--host", "127.0.0.1", "--port", str(port),
                    "--dashboard-address", ":0")
        self.client = distributed.Client(self.address, timeout="60s")

    def worker(self, *args: str) -> None:
        before = len(self.client.scheduler_info()["workers"])
        self._start("worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                    "--dashboard-address", ":0", *args)
        self.client.wait_for_workers(before + 1, timeout=60)

    def _start(self, *args: str) -> None:
        self.procs.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "dask"), *args], cwd=self.folder,
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
