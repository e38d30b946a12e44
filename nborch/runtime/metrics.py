"""Prometheus metrics of runs, served over HTTP by ``--metrics-port`` (needs prometheus-client).

``Metrics`` is an event listener: give it to every run of the process (``listeners=[...]``)
and it counts what ends and gauges what runs, per pipeline. It must hear a run's
``RunStarted`` (which names the pipeline); events of runs it did not see start are ignored.
Given a store, it also reads there at each scrape when each pipeline last succeeded, in any
process (``nborch_pipeline_last_success_timestamp_seconds``).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from ..core.errors import MetricsError, NborchError
from ..core.events import RunEnded, RunStarted, TaskStateChanged
from ..core.states import FINAL, State
from ..store.store import Store

log = logging.getLogger("nborch")

# Notebook attempts take from a fraction of a second to hours.
BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
GAUGED = (State.RUNNING, State.QUEUED)


class Metrics:
    """Counters, a histogram and gauges of the runs it hears about, in its own registry (so
    several in one process, as in tests, do not clash)."""

    def __init__(self, store: Store | None = None):
        try:
            import prometheus_client as prom
        except ImportError:
            raise MetricsError("serving metrics needs the prometheus-client package: "
                               "pip install 'nborch[metrics]'") from None
        self._prom = prom
        self.registry = reg = prom.CollectorRegistry()
        label = ["pipeline"]
        self.runs = prom.Counter("nborch_runs", "Runs ended, by final state",
                                 label + ["status"], registry=reg)
        self.task_runs = prom.Counter("nborch_task_runs", "Task runs ended, by final state",
                                      label + ["status"], registry=reg)
        self.retries = prom.Counter("nborch_task_retries", "Failed attempts to be retried",
                                    label, registry=reg)
        self.durations = prom.Histogram("nborch_attempt_duration_seconds",
                                        "Duration of task attempts", label, buckets=BUCKETS,
                                        registry=reg)
        self.gauges: dict[str, Any] = {  # by state
            State.RUNNING: prom.Gauge("nborch_tasks_running", "Tasks running now", label,
                                      registry=reg),
            State.QUEUED: prom.Gauge("nborch_tasks_queued", "Tasks ready and waiting for a slot",
                                     label, registry=reg)}
        self.runs_running = prom.Gauge("nborch_runs_running", "Runs in progress", label,
                                       registry=reg)
        if store is not None:
            reg.register(LastSuccess(store))
        self._lock = threading.Lock()  # runs of a scheduler emit from their own threads
        self._runs: dict[str, tuple[str, dict[str, str]]] = {}  # run id -> (pipeline, states)
        self._began: dict[tuple[str, str, int], str] = {}  # (run, task, attempt) -> start time
        self._server: Any = None  # prometheus_client's WSGI server

    def __call__(self, event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self._runs[event.run_id] = (event.pipeline, {})
                self.runs_running.labels(event.pipeline).inc()
            elif isinstance(event, TaskStateChanged) and event.run_id in self._runs:
                self._task_changed(event)
            elif isinstance(event, RunEnded) and event.run_id in self._runs:
                pipeline, states = self._runs.pop(event.run_id)
                for state in states.values():  # tasks a crashed engine left running
                    if state in GAUGED:
                        self.gauges[state].labels(pipeline).dec()
                self._began = {k: v for k, v in self._began.items() if k[0] != event.run_id}
                self.runs_running.labels(pipeline).dec()
                self.runs.labels(pipeline, event.status).inc()

    def _task_changed(self, e: TaskStateChanged) -> None:
        pipeline, states = self._runs[e.run_id]
        old = states.get(e.task)
        states[e.task] = e.state
        if old in GAUGED:
            self.gauges[old].labels(pipeline).dec()
        if e.state in GAUGED:
            self.gauges[e.state].labels(pipeline).inc()
        key = (e.run_id, e.task, e.attempt)
        if e.state == State.RUNNING:
            self._began[key] = e.at
        if e.attempt_status is not None and key in self._began:
            seconds = (datetime.fromisoformat(e.at) -
                       datetime.fromisoformat(self._began.pop(key))).total_seconds()
            self.durations.labels(pipeline).observe(max(0.0, seconds))
        if e.state == State.RETRYING:
            self.retries.labels(pipeline).inc()
        elif e.state in FINAL:
            self.task_runs.labels(pipeline, e.state).inc()

    # -- serving --------------------------------------------------------------------------

    def serve(self, port: int, host: str = "0.0.0.0") -> Metrics:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread until ``close()``."""
        try:
            self._server, _ = self._prom.start_http_server(port, host, registry=self.registry)
        except (OSError, OverflowError) as exc:  # in use, not allowed, no such address
            reason = getattr(exc, "strerror", None) or exc
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {reason} "
                               "(choose another --metrics-port or --metrics-host)") from None
        return self

    @property
    def port(self) -> int:
        return self._server.server_port

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class LastSuccess:
    """A collector: when each pipeline's newest successful run ended, as the store records
    it (whichever process ran it), read when Prometheus scrapes."""

    def __init__(self, store: Store):
        self.store = store

    def describe(self):
        return [self._family()]  # without a read at registration

    def collect(self):
        family = self._family()
        try:
            ended = self.store.last_successes() if self.store.exists else {}
        except NborchError as exc:  # a store being replaced, say: no sample this scrape
            log.warning("nborch: metrics: %s", exc)
            ended = {}
        for pipeline, when in ended.items():
            family.add_metric([pipeline], datetime.fromisoformat(when).timestamp())
        yield family

    def _family(self):
        from prometheus_client.core import GaugeMetricFamily
        return GaugeMetricFamily("nborch_pipeline_last_success_timestamp_seconds",
                                 "When the newest successful run of the pipeline ended "
                                 "(Unix time), as the store records it", labels=["pipeline"])
