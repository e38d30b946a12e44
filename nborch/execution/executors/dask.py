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
written on the worker. Workers write the executed notebook where the run says
(``--output-dir``, else the run's folder in the store), and the log and the artifacts in the
run's folder; a worker that does not see it (another host) needs only the output location:
the orchestrator writes the log from the masked output the worker sends (``dask_log``),
and the artifacts go to the output location (``offhome``).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ...core import events
from ...core.clock import utcnow
from ...core.errors import NborchError, SpecError, error_dict
from ...core.states import State
from ...core.version import __version__
from ..attempt import AttemptJob, AttemptResult
from ..kernels import KernelRequest
from .base import Executor
from .dask_lease import Lease, lease_name
from .dask_log import DRAINED, RELAYED, RelayedLogs
from .dask_wire import pack, spare_dropper, worker_entry, worker_plugin
from .dask_worker import STARTED

log = logging.getLogger("nborch")
WORKERS_SECONDS = 1.0


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
        self._workers_seen: dict = {}
        self._workers_at = -WORKERS_SECONDS
        self._install_plugin()
        self._topic = f"nborch-{uuid.uuid4().hex}"
        self._lease = Lease(self.client, lease_name(self._topic))
        self._emitters: dict[tuple, Callable] = {}  # (task, attempt) -> the run's emit
        self._secrets: dict[tuple, str] = {}  # (task, attempt) -> its secrets' Variable
        self._events: queue.Queue = queue.Queue()  # the workers' events; callables to run
        self._logs = RelayedLogs(self._events.put)
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
        self._logs.add(key, job)
        self._run_ids.add(job.run_id)
        payload, secrets = pack(job, request)
        secrets_name = None
        if secrets is not None:  # apart from the task: Dask logs a failing task's arguments
            secrets_name = f"{key}-secrets"
            _import_distributed().Variable(secrets_name, client=self.client).set(secrets)
            self._secrets[(job.task, job.attempt)] = secrets_name
        future = self.client.submit(worker_entry(), payload, secrets_name, self._topic, key,
                                    self._lease.name, __version__, key=key, pure=False,
                                    resources=dict(job.resources) or None)
        attempt = DaskAttempt(self.client, future, key)
        started = utcnow()
        future.add_done_callback(lambda f: self._ended(f, started, attempt, done))
        return attempt

    def _ended(self, future, started: str, attempt: DaskAttempt,
               done: Callable[[AttemptResult], None]) -> None:
        result = self._result(future, started, attempt.cancelled)
        self._events.put(lambda: self._logs.end(attempt.key, result, lambda: done(result)))

    def _unoffered(self, resources: dict) -> dict | None:
        """An error when no worker offers ``resources`` (a typo, a GPU worker that is down):
        Dask would hold the task forever."""
        offers = {address: info.get("resources") or {}
                  for address, info in self._scheduler_workers().items()}
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
        """The cluster's worker threads now (at least 1)."""
        return max(1, self.capacity({}))

    def capacity(self, resources: Mapping[str, float]) -> int:
        """Attempts needing ``resources`` the running workers can run at once: on each, its
        threads, or fewer if its resources hold fewer (``GPU=2`` holds two of ``GPU: 1``)."""
        total = 0
        for info in self._workers().values():
            if info.get("status", "running") != "running":  # paused, closing
                continue
            offer = info.get("resources") or {}
            total += min([info.get("nthreads", 0), *(int(offer.get(name, 0) // amount)
                                                     for name, amount in resources.items())])
        return total

    def _workers(self) -> dict:
        """The scheduler's workers (address -> what the worker says of itself), asked again
        at most every ``WORKERS_SECONDS``: what one reading of the run's numbers shares."""
        now = time.monotonic()
        if now - self._workers_at >= WORKERS_SECONDS:
            try:
                self._workers_seen = self._scheduler_workers()
            except Exception:  # a scheduler that went away says so at the next submit
                pass
            self._workers_at = now
        return self._workers_seen

    def _scheduler_workers(self) -> dict:
        """Every worker of the cluster, address -> what it says of itself."""
        try:
            info = self.client.scheduler_info(n_workers=-1)  # recent releases: 5 unless asked
        except TypeError:  # releases before ``n_workers`` gave them all
            info = self.client.scheduler_info()
        return info.get("workers", {})

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
        """Hand the workers' events to the run and the logs, in order, off Dask's event
        loop; and end the attempts' logs (``dask_log``)."""
        while (item := self._events.get()) is not None:
            try:
                if callable(item):
                    item()
                else:
                    self._handle(item[1])
            except Exception:  # one bad event must not stop the others
                log.exception("nborch: a Dask worker's event could not be handled")
        self._logs.close()

    def _handle(self, message: dict) -> None:
        fields = message["fields"]
        if message["type"] in (RELAYED, DRAINED):
            self._logs.relayed(fields["key"], drained=message["type"] == DRAINED)
            return
        if message["type"] == STARTED:
            self._logs.started(fields["task"], fields["attempt"], fields["at"])
            self.on_attempt_started(**fields)
            return
        event = getattr(events, message["type"])(**fields)
        if "kernel" in message:
            self._tell(message["kernel"])
        if isinstance(event, events.AttemptOutput):
            self._logs.output(event.task, event.attempt, event.text)
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
            return AttemptResult(State.FAILED, started, utcnow(), None, {}, error_dict(
                "NborchUnavailable", f"the Dask worker at {result['worker']} "
                f"{result['unavailable']}; install nborch {__version__} (the orchestrator's "
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
