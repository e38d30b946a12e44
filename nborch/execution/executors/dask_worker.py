"""One attempt on a Dask worker: a fresh kernel, the notebook (or the command), the kernel
stopped; and a watcher that stops the attempt as soon as its run no longer wants it.

The run gives an attempt up when its future is cancelled (a cancel, or the orchestrator's
client gone: the scheduler releases what it wanted), when this worker closes (it lost the
scheduler: Dask closes such a worker, but would wait for the attempt to end), or when the
run's lease lapses (``dask_lease``). The first two are the worker's own state, seen at once;
the kernel is then killed and nothing but the log's end line is written, so a late result
never lands in a run that has moved on.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading

from ...core import events
from ...core.clock import utcnow
from ...core.errors import error_dict
from ...core.states import State
from ..attempt import AttemptJob, AttemptResult
from ..kernels import KernelRequest
from .dask_lease import EXPIRY_SECONDS, LeaseWatch
from .dask_log import DRAINED, RELAYED

SECRETS_WAIT = "30s"  # for the attempt's secrets (set before it was submitted)
WATCH_POLL = 0.5  # seconds between the watcher's looks at the worker's state
WORKER_EVENTS = (events.KernelStarted, events.AttemptProgress, events.AttemptOutput)
STARTED = "AttemptStarted"  # the message that the attempt left Dask's queue
WANTED = {"executing", "long-running", "resumed"}  # a task's states while its run wants it


def unpack(payload: bytes, secrets_name: str | None
           ) -> tuple[AttemptJob, KernelRequest | None]:
    """The attempt ``dask_wire.pack`` sent, its secrets put back."""
    job, request = pickle.loads(payload)
    if secrets_name is None:
        return job, request
    import distributed
    secrets = distributed.Variable(secrets_name, client=distributed.get_client()).get(
        timeout=SECRETS_WAIT)
    job = dataclasses.replace(job, env={**job.env, **secrets["job_env"]},
                              secret_values=secrets["values"])
    if request is not None:
        request = dataclasses.replace(request, env={**request.env, **secrets["request_env"]})
    return job, request


def run_packed(payload: bytes, secrets_name: str | None, topic: str, key: str,
               lease: str) -> AttemptResult:
    """``run_on_worker`` for an attempt as ``dask_wire.pack`` sent it. On a worker that does
    not see the run's folder (``offhome``) the orchestrator writes the log: this says so
    before the attempt, and that all its output was sent after it (``dask_log``)."""
    import distributed

    from ..offhome import run_off_home
    job, request = unpack(payload, secrets_name)
    worker = distributed.get_worker()

    def run(job: AttemptJob, request: KernelRequest | None) -> AttemptResult:
        if not job.relayed_log:
            return run_on_worker(job, request, topic, key, lease)
        worker.log_event(topic, {"type": RELAYED, "fields": {"key": key}})
        try:
            return run_on_worker(job, request, topic, key, lease)
        finally:
            worker.log_event(topic, {"type": DRAINED, "fields": {"key": key}})
    return run_off_home(job, request, f"the Dask worker at {worker.address}", run)


def run_on_worker(job: AttemptJob, request: KernelRequest | None, topic: str, key: str,
                  lease: str) -> AttemptResult:
    import distributed

    from ..kernels import Kernel
    from ..runners import make_runner

    worker = distributed.get_worker()

    def emit(event) -> None:
        if isinstance(event, WORKER_EVENTS):
            worker.log_event(topic, {"type": type(event).__name__,
                                     "fields": dataclasses.asdict(event)})

    started = utcnow()
    worker.log_event(topic, {"type": STARTED, "fields": {
        "task": job.task, "attempt": job.attempt, "at": started}})
    kernel = Kernel(request) if request is not None else None
    try:
        if kernel is not None:
            kernel.start()
    except Exception as exc:
        kernel.shutdown()
        return AttemptResult(State.FAILED, started, utcnow(), None, {}, error_dict(
            "KernelStartError",
            f"kernel {request.name!r} did not start on {worker.address}: {exc}"))
    runner = make_runner(job, kernel, emit)
    finished = threading.Event()
    watch = LeaseWatch(distributed.get_client(), lease)
    threading.Thread(target=_watch, args=(worker, key, watch, runner, finished),
                     name=f"nborch-watch-{job.task}-{job.attempt}", daemon=True).start()
    try:
        return runner.run()
    finally:
        finished.set()
        if kernel is not None:
            kernel.shutdown()


def _watch(worker, key: str, lease: LeaseWatch, runner, finished: threading.Event) -> None:
    while not finished.wait(WATCH_POLL):
        try:
            reason = _given_up(worker, key, lease)
        except Exception:  # the worker is being torn down under us
            reason = "the Dask worker is shutting down"
        if reason is not None:
            runner.abandon(f"stopped on the Dask worker {worker.address}: {reason}")
            return


def _given_up(worker, key: str, lease: LeaseWatch) -> str | None:
    """Why the run no longer wants the attempt ``key`` running here, or None."""
    from distributed.worker import WORKER_ANY_RUNNING
    if worker.status not in WORKER_ANY_RUNNING:
        return "the worker is closing (it lost the Dask scheduler, or is shut down)"
    task = worker.state.tasks.get(key)
    if task is None or task.state not in WANTED:
        return "the run no longer wants it (cancelled, or its orchestrator went away)"
    if lease.lapsed():
        return (f"the run's orchestrator did not renew its lease for {EXPIRY_SECONDS:g}s "
                "(stopped, hung, or cut off from the cluster)")
    return None
