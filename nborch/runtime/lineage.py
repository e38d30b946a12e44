"""OpenLineage: tell a lineage backend (Marquez, DataHub, ...) about runs and task runs.

When the openlineage-python client is configured (``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG``,
an ``openlineage.yml``, or ``OPENLINEAGE__TRANSPORT__*`` variables), each run gets an
``Emitter``: an event listener that turns the run's events into OpenLineage run events and
sends them through the client from a worker thread, so a slow or unreachable backend never
holds up the engine. docs/lineage.md says what is sent, and what never is.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from ..core.events import RunEnded, RunStarted, TaskStateChanged
from ..core.secrecy import Masker
from ..core.states import State
from ..core.version import __version__

log = logging.getLogger("nborch")
DEFAULT_NAMESPACE = "nborch"
DEFAULT_TIMEOUT = 5.0  # seconds; the HTTP transport's own default
PRODUCER = f"urn:nborch:{__version__}"
# Fixed forever: OpenLineage run ids are uuid5(RUN_IDS, ...) of nborch's ids, so every
# event of one run (or task attempt) carries the same id, in any process.
RUN_IDS = uuid.UUID("2f3b342a-51b0-447e-a0ad-a94cce248f04")
# Any other end is a FAIL.
OUTCOMES: dict[str, str] = {State.SUCCESS: "COMPLETE", State.CANCELLED: "ABORT"}
_warned_missing = False


def configured(env: Any = os.environ) -> bool:
    """Whether the user asked for lineage, in any of the ways the client reads its config."""
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OPENLINEAGE_URL") or env.get("OPENLINEAGE_CONFIG")
                or any(k.startswith("OPENLINEAGE__TRANSPORT__") for k in env)
                or os.path.isfile("openlineage.yml")
                or os.path.isfile(os.path.expanduser("~/.openlineage/openlineage.yml")))


def emitter(secret_values: list[str]) -> Emitter | None:
    """A listener for one run, or None when lineage is not configured or cannot be sent."""
    global _warned_missing
    if not configured():
        return None
    if importlib.util.find_spec("openlineage") is None or \
            importlib.util.find_spec("openlineage.client") is None:
        if not _warned_missing:
            _warned_missing = True
            log.warning("nborch: OpenLineage is configured but the client is not installed; "
                        "runs send no lineage events (pip install 'nborch[lineage]')")
        return None
    try:
        return Emitter(_client(secret_values), secret_values)
    except Exception as exc:  # a bad config file or URL: say so, run anyway
        log.warning("nborch: OpenLineage client not set up, no lineage events: %s: %s",
                    type(exc).__name__, exc)
        return None


def _client(secret_values: list[str]):
    from openlineage.client import OpenLineageClient
    before = set(os.environ)
    client = OpenLineageClient()
    # The client copies OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__... variables of this
    # process; take them out again so kernels and later runs see the environment as it was.
    for key in set(os.environ) - before:
        os.environ.pop(key, None)
    # The client can attach environment variables it is told to collect: never a secret.
    facets = client.config.facets
    facets.environment_variables = [name for name in facets.environment_variables
                                    if os.environ.get(name) not in secret_values]
    return client


def run_uuid(*key: Any) -> str:
    """The OpenLineage run id of a run (``"run", run_id, resumes``) or of a task attempt
    (``"task", run_id, task, attempt``)."""
    return str(uuid.uuid5(RUN_IDS, json.dumps(key)))


def dataset_name(path: str) -> tuple[str, str]:
    """A product's (namespace, name) by OpenLineage's naming spec: ``file`` and the absolute
    path for a local file, ``scheme://authority`` and the rest for a URL (``s3://bucket``)."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return "file", path
    authority, _, name = rest.partition("/")
    return ("file", "/" + name) if (scheme, authority) == ("file", "") else \
        (f"{scheme}://{authority}", name)


class Emitter:
    """Listens to one run's events; START, then COMPLETE, FAIL or ABORT, for the run and for
    each task attempt that started. Building the events is cheap and done in the emitting
    thread; serialising and sending is the worker's."""

    def __init__(self, client, secret_values: list[str]):
        from openlineage.client import event_v2, facet_v2
        self._ol, self._facets = event_v2, facet_v2
        self.client = client
        self.timeout = float(getattr(client.transport, "timeout", None) or DEFAULT_TIMEOUT)
        # The client has no namespace setting of its own; OPENLINEAGE_NAMESPACE is the
        # variable OpenLineage's integrations (Airflow, dbt) read.
        self.namespace = os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE
        self._mask = Masker(secret_values).text
        self._started: Any = None  # the run's RunStarted, once it came (events before: ignored)
        self._run_id = ""                      # the run's OpenLineage id
        self._open: dict[str, str] = {}        # task -> OpenLineage id of its running attempt
        self._failed: list[str] = []           # tasks whose last attempt failed
        self._queue: queue.Queue = queue.Queue()
        self._give_up = threading.Event()      # set when the end-of-run wait is over
        self._worker = threading.Thread(target=self._work, name="nborch-lineage", daemon=True)
        self._worker.start()

    # -- translating (the engine's thread) --------------------------------------------------

    def __call__(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            self._started = event
            self._run_id = run_uuid("run", event.run_id, event.resumes)
            self._send("START", event.pipeline, self._run_id, event.started_at,
                       job_type="PIPELINE", facets={"nominalTime": self._facets.nominal_time_run
                                                    .NominalTimeRunFacet(event.logical_date)})
        elif self._started is None:
            return
        elif isinstance(event, TaskStateChanged):
            self._task(event)
        elif isinstance(event, RunEnded):
            for task in list(self._open):  # attempts the engine never ended (it failed)
                self._end_task(task, "ABORT", event.ended_at, None)
            outcome = OUTCOMES.get(event.status, "FAIL")
            error = None
            if outcome == "FAIL":
                error = (f"tasks failed: {', '.join(self._failed)}" if self._failed
                         else f"the run {event.status}", None)
            self._send(outcome, self._started.pipeline, self._run_id, event.ended_at,
                       job_type="PIPELINE", error=error)
            self._flush()

    def _task(self, event: TaskStateChanged) -> None:
        name = event.task
        if event.state == State.RUNNING:
            self._open[name] = run_uuid("task", event.run_id, name, event.attempt)
            self._send("START", self._job_name(name), self._open[name], event.at,
                       job_type="TASK", parent=True, outputs=self._outputs(name))
        elif event.attempt_status and name in self._open:
            self._end_task(name, OUTCOMES.get(event.attempt_status, "FAIL"), event.at,
                           event.error)
        if event.state == State.FAILED:
            self._failed.append(name)

    def _end_task(self, name: str, outcome: str, at: str, error: dict | None) -> None:
        failure = None
        if outcome == "FAIL" and error:  # already masked, as everywhere
            kind, message = error.get("type") or "Error", error.get("message")
            failure = (f"{kind}: {message}" if message else kind, error.get("traceback"))
        self._send(outcome, self._job_name(name), self._open.pop(name), at, job_type="TASK",
                   parent=True, outputs=self._outputs(name), error=failure)

    def _job_name(self, task: str) -> str:
        return f"{self._started.pipeline}.{task}"

    def _outputs(self, task: str) -> list:
        # Declared products (SPEC 1.5): {name: absolute path}, absent before products exist.
        products = self._started.tasks.get(task, {}).get("products") or {}
        return [self._ol.OutputDataset(*dataset_name(str(path))) for path in products.values()]

    def _send(self, event_type: str, job_name: str, run_id: str, at: str, job_type: str,
              parent: bool = False, outputs: Sequence = (),
              error: tuple[str, str | None] | None = None, facets: dict | None = None) -> None:
        """Queue one RunEvent; ``error`` is (message, stack trace or None)."""
        f = self._facets
        facets = {"processing_engine": f.processing_engine_run.ProcessingEngineRunFacet(
            version=__version__, name="nborch"), **(facets or {})}
        if parent:  # a task attempt belongs to the pipeline run (also the root run)
            job = {"namespace": self.namespace, "name": self._started.pipeline}
            pr = f.parent_run
            facets["parent"] = pr.ParentRunFacet(
                run=pr.Run(runId=self._run_id), job=pr.Job(**job),
                root=pr.Root(run=pr.RootRun(runId=self._run_id), job=pr.RootJob(**job)))
        if error:  # masked again: the secrets never leave, whatever the source
            message, trace = error
            facets["errorMessage"] = f.error_message_run.ErrorMessageRunFacet(
                message=self._mask(message), programmingLanguage="python",
                stackTrace=self._mask(trace) if trace else None)
        job_facets = {"jobType": f.job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="NBORCH", jobType=job_type)}
        ol = self._ol
        self._queue.put(ol.RunEvent(
            eventType=ol.RunState[event_type], eventTime=at, producer=PRODUCER,
            run=ol.Run(runId=run_id, facets=facets),
            job=ol.Job(namespace=self.namespace, name=job_name, facets=job_facets),
            outputs=list(outputs)))

    def _flush(self) -> None:
        """Wait for the worker to send what is queued, at most the client's timeout, so a
        short CLI run still delivers its last events; what is left then is dropped."""
        self._queue.put(None)
        self._worker.join(self.timeout)
        if self._worker.is_alive():
            self._give_up.set()
            log.warning("nborch: OpenLineage events of run %s not all sent within %.0f s; "
                        "the rest are dropped", self._started.run_id, self.timeout)

    # -- sending (the worker's thread) ------------------------------------------------------

    def _work(self) -> None:
        failures = 0
        while (event := self._queue.get()) is not None and not self._give_up.is_set():
            try:
                self.client.emit(event)
            except Exception as exc:
                failures += 1
                if failures == 1:  # one line per run, not one per event
                    log.warning("nborch: OpenLineage event not sent (%s: %s); the run goes on, "
                                "further failures of this run are not logged",
                                type(exc).__name__, exc)
        try:
            self.client.close(self.timeout)
        except Exception:
            log.debug("closing the OpenLineage client failed", exc_info=True)
