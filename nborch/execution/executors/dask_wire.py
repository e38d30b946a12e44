"""What crosses from the orchestrator to a Dask worker for one attempt.

The task Dask holds is a small function sent by value (cloudpickle: neither the scheduler
nor a worker needs nborch to read it) and the attempt as pickled bytes. On the worker the
function imports nborch first: a worker without it returns a plain error that the run
shows, where Dask would fail to read the task, log it whole and leave it pending forever.

The attempt's secrets (its environment's secret values, the values to mask) are not in
those bytes: they wait in a Dask ``Variable`` of the attempt, read on the worker once nborch
runs there and deleted when the attempt ends. Dask logs the arguments of a task that fails;
they never hold a secret.

nborch's worker plugin (``worker_plugin``) crosses the same way: on a worker without nborch
its setup does nothing, and the attempts there return the plain error.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

from ..attempt import AttemptJob
from ..kernels import KernelRequest
from .dask_kernels import PLUGIN_NAME


def pack(job: AttemptJob, request: KernelRequest | None) -> tuple[bytes, dict | None]:
    """The attempt as bytes without its secrets, and the secrets (None when it has none);
    ``dask_worker.unpack`` puts them back together on the worker."""
    values = set(job.secret_values)
    if not values:
        return pickle.dumps((job, request)), None
    job_env = {k: v for k, v in job.env.items() if v in values}
    request_env = {} if request is None else \
        {k: v for k, v in request.env.items() if v in values}
    public_job = dataclasses.replace(
        job, env={k: v for k, v in job.env.items() if k not in job_env}, secret_values=[])
    public_request = None if request is None else dataclasses.replace(
        request, env={k: v for k, v in request.env.items() if k not in request_env})
    secrets = {"job_env": job_env, "request_env": request_env,
               "values": list(job.secret_values)}
    return pickle.dumps((public_job, public_request)), secrets


def worker_entry() -> Callable[..., Any]:
    """The function Dask runs on a worker (made here, so that cloudpickle sends it by
    value). It returns the ``AttemptResult``, or ``{"unavailable": why, "worker": address}``
    when nborch cannot be imported there or is another version than the orchestrator's
    ``version`` (the attempt's bytes are another version's classes)."""
    def attempt(payload: bytes, secrets_name, topic: str, key: str, lease: str,
                version: str):
        import distributed
        try:
            from nborch.core.version import __version__
            from nborch.execution.executors.dask_worker import run_packed
        except Exception as exc:  # not installed, or broken, in the worker's environment
            return {"unavailable": f"cannot import nborch ({type(exc).__name__}: {exc})",
                    "worker": distributed.get_worker().address}
        if __version__ != version:
            return {"unavailable": f"has nborch {__version__}",
                    "worker": distributed.get_worker().address}
        return run_packed(payload, secrets_name, topic, key, lease)
    return attempt


def worker_plugin():
    """The Dask worker plugin that keeps each worker's kernels (``dask_kernels``): a kernel
    template started with the worker, warm kernels; registered once per cluster (Dask
    keeps it for the workers that join later). Made here, so that cloudpickle sends it by
    value: a worker without nborch, or with an nborch that cannot, just goes without."""
    import distributed

    class NborchKernels(distributed.WorkerPlugin):
        idempotent = True  # registered by each run: the first registration stays
        name = PLUGIN_NAME

        def setup(self, worker):
            self.kernels = None
            try:
                from nborch.execution.executors.dask_kernels import WorkerKernels
                self.kernels = WorkerKernels(worker.state.nthreads,
                                             f" on the Dask worker {worker.address}")
            except Exception:  # the attempts there say nborch is unavailable
                pass

        def teardown(self, worker):
            if getattr(self, "kernels", None) is not None:
                self.kernels.close()

    return NborchKernels()


def spare_dropper(run_id: str) -> Callable[..., Any]:
    """A function for ``Client.run`` that stops the warm kernels the run ``run_id`` left on a
    worker (sent by value, as ``worker_entry``; a coroutine, which Dask runs without making
    the caller wait)."""
    async def drop(dask_worker) -> None:
        kernels = getattr(dask_worker.plugins.get(PLUGIN_NAME), "kernels", None)
        if kernels is not None:
            kernels.drop_run(run_id)
    return drop
