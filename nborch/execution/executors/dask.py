"""Run attempts on a Dask distributed cluster.

Each attempt is one Dask task: on a worker it takes a fresh kernel (forked from the
worker's kernel template, often ahead of need: ``dask_kernels``, kept by nborch's worker
plugin, which the executor registers as it connects) and runs the notebook through the
same ``AttemptRunner`` as the local executor (papermill, timeouts, masking of
secrets; see ``dask_worker``). The orchestrating process keeps the DAG, the store and every
state change; the worker says when the attempt leaves Dask's queue, sends progress and
output back as Dask events (``Worker.log_event``, received by ``Client.subscribe_topic``)
and returns the attempt's result (published values included). Cancelling cancels the
attempt's future; the watcher on the worker then stops its kernel, as it does when the
run's lease (``dask_lease``) lapses or the worker loses its scheduler.

Secrets travel with the attempt in memory (pickled over Dask's connection) and are never
written on the worker. Workers write the executed notebook and the log where the store
says: on one machine that just works; across hosts the run's folder in the store must be a
path every worker sees (a shared file system), else the attempt fails with HomeNotShared.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

from ...core import events
from ...core.clock import utcnow
from ...core.errors import NborchError, SpecError, error_dict
from ...core.states import State
from ..attempt import AttemptJob, AttemptResult
from ..kernels import KernelRequest
from .base import Executor
from .dask_lease import Lease, lease_name
from .dask_wire import pack, spare_dropper, worker_entry, worker_plugin
from .dask_worker import STARTED

log = logging.getLogger("nborch")


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise SpecError("the dask executor needs Dask distributed: pip install 'nborch[dask]'"
                        ) from None
    return distributed


_LOCAL: dict = {}  # "cluster": this process's LocalCluster for `--executor dask`
_LOCAL_LOCK = threading.Lock()


def _local_cluster():
    """The LocalCluster of ``--executor dask`` (a worker process per CPU): started by the
    first run that needs it and kept for the others of this process (a scheduler's runs, a
    notebook's), since starting one costs seconds; closed when the process exits."""
    distributed = _import_distributed()
    with _LOCAL_LOCK:
        cluster = _LOCAL.get("cluster")
        if cluster is None or cluster.status.name in ("closing", "closed", "failed"):
            cluster = _LOCAL["cluster"] = distributed.LocalCluster(
                n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                dashboard_address=None)
            atexit.register(cluster.close)
        return cluster


class DaskExecutor(Executor):
    name = "dask"
    queues = True  # an attempt may wait in Dask's queue: it says when it starts on a worker

    @classmethod
    def from_target(cls, target: str) -> DaskExecutor:
        return cls(target)

    def __init__(self, target: Any = "dask"):
        distributed = _import_distributed()
        if isinstance(target, distributed.Client):
            self.client, self._owns_client = target, False
        elif target == "dask":
            self.client, self._owns_client = distributed.Client(_local_cluster()), True
        else:
            address = str(target).removeprefix("dask://")
            if "://" not in address:  # tls://, ucx://... as given; tcp:// by default
                address = "tcp://" + address
            try:
                self.client = distributed.Client(address, timeout="15s")
            except (OSError, TimeoutError) as exc:
                raise NborchError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
            except TypeError as exc:  # tls:// with no certificates in Dask's configuration
                raise NborchError(f"cannot connect to the Dask scheduler at {address}: {exc}; "
                                  "give Dask the certificates: DASK_DISTRIBUTED__COMM__TLS__"
                                  "CA_FILE, ..._CLIENT__CERT and ..._CLIENT__KEY, or "
                                  "distributed.comm.tls.* in ~/.config/dask/") from None
            self._owns_client = True
        self._told: set[str] = set()  # how kernels start on the workers, said by `run -v`
        self._run_ids: set[str] = set()  # whose warm kernels the workers drop at the end
        self._install_plugin()
        self._topic = f"nborch-{uuid.uuid4().hex}"
        self._lease = Lease(self.client, lease_name(self._topic))
        self._emitters: dict[tuple, Callable] = {}  # (task, attempt) -> the run's emit
        self._secrets: dict[tuple, str] = {}  # (task, attempt) -> its secrets' Variable
        self._events: queue.Queue = queue.Queue()
        threading.Thread(target=self._dispatch, name="nborch-dask-events", daemon=True).start()
        self.client.subscribe_topic(self._topic, self._events.put)

    def _install_plugin(self) -> None:
        """nborch's worker plugin (``dask_kernels``: kernel templates and warm kernels),
        once per cluster; without it attempts start their kernels the usual way."""
        try:
            self.client.register_plugin(worker_plugin())
        except Exception as exc:  # an older or restricted scheduler
            log.warning("kernels: nborch's worker plugin could not be registered on the Dask "
                        "cluster (%s: %s); kernels start the usual way on its workers",
                        type(exc).__name__, exc)

    def submit(self, job: AttemptJob, request: KernelRequest, emit: Callable,
               done: Callable[[AttemptResult], None]) -> DaskAttempt:
        key = f"nborch-{job.run_id}-{job.task}-{job.attempt}-{uuid.uuid4().hex[:6]}"
        if self.client.status != "running":  # the scheduler is gone: start nothing new
            done(AttemptResult(State.FAILED, utcnow(), utcnow(), None, {}, self._lost()))
            return DaskAttempt(self.client, None, key)
        if job.resources and (missing := self._unoffered(job.resources)):
            done(AttemptResult("failed", utcnow(), utcnow(), None, {}, missing))
            return DaskAttempt(self.client, None, key)
        self._emitters[(job.task, job.attempt)] = emit
        self._run_ids.add(job.run_id)
        payload, secrets = pack(job, request)
        secrets_name = None
        if secrets is not None:  # apart from the task: Dask logs a failing task's arguments
            secrets_name = f"{key}-secrets"
            _import_distributed().Variable(secrets_name, client=self.client).set(secrets)
            self._secrets[(job.task, job.attempt)] = secrets_name
        future = self.client.submit(worker_entry(), payload, secrets_name, self._topic, key,
                                    self._lease.name, key=key, pure=False,
                                    resources=dict(job.resources) or None)
        attempt = DaskAttempt(self.client, future, key)
        started = utcnow()
        future.add_done_callback(lambda f: done(self._result(f, started, attempt.cancelled)))
        return attempt

    def _unoffered(self, resources: dict) -> dict | None:
        """An error when no worker offers ``resources`` (a typo, a GPU worker that is down):
        Dask would hold the task forever."""
        workers = self.client.scheduler_info().get("workers", {})
        offers = {address: info.get("resources") or {} for address, info in workers.items()}
        if any(all(offer.get(name, 0) >= amount for name, amount in resources.items())
               for offer in offers.values()):
            return None
        wanted = ", ".join(f"{name}={amount}" for name, amount in resources.items())
        offered = "; ".join(f"{address}: " + (", ".join(f"{k}={v}" for k, v in offer.items())
                                             or "no resources")
                            for address, offer in sorted(offers.items())) or "no workers"
        return error_dict("ResourceUnavailable", f"no worker of the Dask cluster at "
                          f"{self.client.scheduler.address} offers {wanted} (workers: {offered}); "
                          "start a worker with `dask worker ... --resources` or fix the task's "
                          "resources")

    def _lost(self) -> dict:
        return error_dict("DaskSchedulerLost", f"lost the connection to the Dask scheduler at "
                      f"{self.client.scheduler.address}; once it is back, `nborch resume` runs "
                      "what did not finish")

    def _result(self, future, started: str, cancelled: bool) -> AttemptResult:
        if future.status == "cancelled" and not cancelled and self.client.status != "running":
            return AttemptResult(State.FAILED, started, utcnow(), None, {}, self._lost())
        return _result(future, started, cancelled)

    def parallelism(self) -> int:
        """The cluster's worker threads when the run starts (workers that join later add
        none; give --max-parallel to plan for them)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # a scheduler that went away says so at the first submit
            return super().parallelism()

    def release(self, task: str, attempt: int) -> None:
        self._emitters.pop((task, attempt), None)
        self._forget_secrets(self._secrets.pop((task, attempt), None))

    def _forget_secrets(self, name: str | None) -> None:
        if name is not None:
            try:
                _import_distributed().Variable(name, client=self.client).delete()
            except Exception:  # the scheduler is gone, and the secrets with it
                pass

    def shutdown(self) -> None:
        for name in self._secrets.values():
            self._forget_secrets(name)
        self._secrets.clear()
        self._events.put(None)
        self._lease.end()
        try:
            for run_id in self._run_ids:
                self.client.run(spare_dropper(run_id), wait=False)
            self.client.unsubscribe_topic(self._topic)
            for topic in self.client.run_on_scheduler(_topic_sweeper(self._topic)):
                _import_distributed().Variable(lease_name(topic), client=self.client).delete()
        except Exception:  # the connection is already gone
            pass
        if self._owns_client:
            self.client.close()

    def _dispatch(self) -> None:
        """Hand the workers' events to the run, in order, off Dask's event loop."""
        while (item := self._events.get()) is not None:
            _, message = item
            if message["type"] == STARTED:
                self.on_attempt_started(**message["fields"])
                continue
            event = getattr(events, message["type"])(**message["fields"])
            if "kernel" in message:
                self._tell(message["kernel"])
            emit = self._emitters.get((event.task, event.attempt))
            if emit is not None:
                emit(event)

    def _tell(self, how: str) -> None:
        if how not in self._told:
            self._told.add(how)
            log.info("kernels on the Dask workers: %s", how)


class DaskAttempt:
    """The handle of an attempt running on the cluster."""

    def __init__(self, client, future, key: str):
        self.client, self.future, self.key = client, future, key
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.future is None or self.client.status != "running":
            return
        self.future.cancel()  # the worker's watcher stops one that runs


def _result(future, started: str, cancelled: bool) -> AttemptResult:
    if future.status == "finished":
        result = future.result()
        if isinstance(result, dict):  # dask_wire.worker_entry: nborch missing there
            from ...core.version import __version__
            return AttemptResult(State.FAILED, started, utcnow(), None, {}, error_dict(
                "NborchUnavailable", f"the Dask worker at {result['worker']} cannot import "
                f"nborch ({result['unavailable']}); install nborch {__version__} (this "
                "version) in the workers' environment"))
        return result
    if cancelled or future.status == "cancelled":
        return AttemptResult(State.CANCELLED, started, utcnow(), None, {}, error_dict(
            "Cancelled", "the run was cancelled"))
    exc = future.exception()
    kind = type(exc).__name__
    if kind == "KilledWorker":
        message = ("the Dask worker running it died (Dask gave up after the workers it tried "
                   f"died too): {exc}")
        return AttemptResult(State.FAILED, started, utcnow(), None, {},
                             error_dict("WorkerLost", message))
    return AttemptResult(State.FAILED, started, utcnow(), None, {},
                         error_dict(kind, str(exc) or kind))


def _topic_sweeper(own: str) -> Callable:
    """A function for the scheduler that drops the event topics of nborch runs nobody
    follows any more: ``own`` (this run's; its unsubscribing may not have arrived yet), and
    those of runs that ended or died before; it returns their names (their leases are
    deleted next). Dask keeps a topic (its last ``distributed.admin.low-level-log-length``
    events) as long as the scheduler runs. Made here so that cloudpickle sends it by value:
    the scheduler needs no nborch."""
    def sweep(dask_scheduler) -> list[str]:
        topics = getattr(getattr(dask_scheduler, "_broker", None), "_topics", None)
        clients = getattr(dask_scheduler, "clients", None)
        if not isinstance(topics, dict) or not isinstance(clients, dict):  # another Dask
            return []

        def followed(topic) -> bool:  # a client that went away stays a subscriber
            return bool(set(getattr(topic, "subscribers", clients)) & set(clients))

        stale = [name for name, topic in topics.items() if name == own
                 or (name.startswith("nborch-") and not followed(topic))]
        for name in stale:
            del topics[name]
        return stale
    return sweep
