"""Parallelism on a real Dask cluster (runtime/slots.py): the default follows the workers'
threads, a resource set's cap the workers that offer it, and tasks waiting for a GPU worker
do not hold back the CPU tasks."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from conftest import PUBLISH_WORKER, write_notebook
from dask_cluster import DaskProcesses

from nborch import Pipeline

distributed = pytest.importorskip("distributed")

# The kernel of a task runs under the worker process: its parent's pid says which worker.


def executor_seeing(workers: dict):
    """A Dask executor whose cluster has ``workers`` (as the scheduler describes them)."""
    import time

    from nborch.execution.executors.dask import DaskExecutor
    executor = object.__new__(DaskExecutor)
    executor._workers_seen, executor._workers_at = workers, time.monotonic()
    return executor


def test_capacity_counts_each_workers_threads_and_resources():
    executor = executor_seeing({
        "cpu": {"nthreads": 2, "resources": {}, "status": "running"},
        "gpu1": {"nthreads": 1, "resources": {"GPU": 1}, "status": "running"},
        "gpu2": {"nthreads": 4, "resources": {"GPU": 2, "MEM": 64}, "status": "running"},
        "paused": {"nthreads": 8, "resources": {"GPU": 8}, "status": "paused"}})
    assert executor.capacity({}) == 7 == executor.parallelism()
    assert executor.capacity({"GPU": 1}) == 1 + 2  # gpu2: two GPUs, though four threads
    assert executor.capacity({"GPU": 0.5}) == 1 + 4  # gpu2: four threads, though 4 halves
    assert executor.capacity({"GPU": 1, "MEM": 40}) == 1
    assert executor.capacity({"TPU": 1}) == 0
    assert executor_seeing({}).parallelism() == 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A CPU worker with two threads, a GPU worker (GPU=1) with one."""
    cluster = DaskProcesses(tmp_path_factory.mktemp("dask"))
    cluster.worker("--nthreads", "2")
    cluster.worker("--resources", "GPU=1")
    yield cluster
    cluster.stop()


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_cpu_tasks_start_while_gpu_tasks_wait_for_the_gpu_worker(workdir, cluster):
    """Three 1-second GPU tasks first in the pipeline's order, then two CPU tasks: by
    default three attempts at once (the cluster's threads), of which one GPU task (the one
    GPU), so both CPU tasks start before the second GPU task; they used to wait behind
    GPU tasks queued in Dask."""
    write_notebook(workdir / "gpu.ipynb", "import time\ntime.sleep(1)")
    write_notebook(workdir / "cpu.ipynb", "x = 1")
    p = Pipeline("mixed", root=workdir)
    for i in range(3):
        p.notebook("gpu.ipynb", name=f"gpu{i}", resources={"GPU": 1})
    for i in range(2):
        p.notebook("cpu.ipynb", name=f"cpu{i}")
    run = p.run(executor=f"dask://{cluster.address}", home=workdir / ".nborch")
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    gpu = sorted((at(run.tasks[f"gpu{i}"].started_at), at(run.tasks[f"gpu{i}"].ended_at))
                 for i in range(3))
    for (_, ended), (started, _) in zip(gpu, gpu[1:], strict=False):
        assert started >= ended  # one GPU: one GPU task at a time
    for i in range(2):
        assert at(run.tasks[f"cpu{i}"].started_at) < gpu[1][0]


def test_sixteen_tasks_use_both_workers_by_default(workdir, cluster):
    write_notebook(workdir / "where.ipynb", PUBLISH_WORKER)
    p = Pipeline("sixteen", root=workdir)
    for i in range(16):
        p.notebook("where.ipynb", name=f"t{i}")
    run = p.run(executor=f"dask://{cluster.address}", home=workdir / ".nborch")
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    used = {run.values[f"t{i}"]["worker_pid"] for i in range(16)}
    assert used == set(cluster.client.run(os.getpid).values())
