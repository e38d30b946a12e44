"""What an attempt gets: its ``AttemptJob`` (parameters with ``upstream`` values from the
live Run, environment, secrets, paths) and its ``KernelRequest``; and each task as
``RunStarted`` announces it."""

from __future__ import annotations

import json

from ..core.grouping import own_values
from ..core.run import Run
from ..execution import outputs
from ..execution.attempt import AttemptJob
from ..execution.kernels import KernelRequest
from ..execution.offhome import ARTIFACT_ENV
from ..spec.validate import PreparedRun
from ..store.store import Store


class Jobs:
    """Builds the attempts of one run (its ``prepared`` tasks, the live ``run``)."""

    def __init__(self, prepared: PreparedRun, run: Run, store: Store, run_dir, notebooks: str):
        self.prepared, self.run, self.store = prepared, run, store
        self.run_dir, self.notebooks = run_dir, notebooks
        self.home = str(store.home.resolve())  # as workers elsewhere must find it
        # --output-dir given: there too go the artifacts of a worker without the run's folder
        self.output_location = notebooks if notebooks != str(run_dir) else None

    def env(self, name: str, attempt: int) -> dict:
        """What a task's kernel or command gets on top of nborch's environment (less
        ``withheld_env``): its ``env``, run details, its own secrets."""
        p = self.prepared.tasks[name]
        return {
            **p.task.env,
            "NBORCH_RUN_ID": self.run.run_id,
            "NBORCH_TASK": name,
            "NBORCH_ATTEMPT": str(attempt),
            "NBORCH_LOGICAL_DATE": self.prepared.logical_date.isoformat(),
            ARTIFACT_ENV: str(self.run_dir / "artifacts" / name),
            "NBORCH_HOME": self.home,
            **p.secrets,
        }

    def kernel_request(self, name: str, attempt: int) -> KernelRequest | None:
        """The kernel an attempt needs (None for a command): known before its upstream
        tasks finish."""
        p = self.prepared.tasks[name]
        if p.command is not None:
            return None
        return KernelRequest(p.kernel, str(p.task.workdir), self.env(name, attempt),
                             self.prepared.withheld_env)

    def job(self, name: str, attempt: int, *, retried: bool) -> AttemptJob:
        """``retried``: a failure of this attempt would be retried, so its notebook is kept
        under the attempt's own name (written there, never renamed: object stores)."""
        p = self.prepared.tasks[name]
        convention = p.task.product_convention
        if convention is not None:  # each upstream task's product
            upstream = convention.upstream_products(lambda up: self.prepared.tasks[up].product)
        else:
            upstream = {up: {"notebook": self.run.tasks[up].output_path,
                             "values": self.run.tasks[up].values,
                             **self.prepared.tasks[up].products} for up in p.task.upstream}
        env = self.env(name, attempt)
        parameters = dict(p.parameters)
        if p.command is not None:
            env["NBORCH_UPSTREAM"] = json.dumps(upstream)
        elif p.inject_upstream:
            parameters["upstream"] = upstream
        if convention is not None and "product" in parameters:  # injected last
            parameters["product"] = parameters.pop("product")
        return AttemptJob(
            run_id=self.run.run_id, task=name, attempt=attempt,
            notebook=str(p.task.notebook or ""), parameters=parameters, kernel=p.kernel or "",
            cwd=str(p.task.workdir), output_path=outputs.join(self.notebooks, f"{name}.ipynb"),
            retry_output_path=outputs.join(self.notebooks, f"{name}.attempt-{attempt}.ipynb")
            if retried else None,
            log_path=str(self.store.log_path(self.run.run_id, name).resolve()),  # workers elsewhere
            artifact_location=outputs.join(self.output_location, "artifacts", name)
            if self.output_location else None,
            env=env, withheld_env=tuple(sorted(self.prepared.withheld_env)),
            timeout=p.task.timeout, secret_values=self.prepared.secret_values,
            resources=p.task.resources, command=p.command, products=p.products,
            **(convention.job_options(p.products) if convention is not None else {}))


def task_records(prepared: PreparedRun) -> dict[str, dict]:
    """The tasks as ``RunStarted`` announces them (and the store records them)."""
    own = own_values(prepared.pipeline.grids,
                     {n: p.task.parameters for n, p in prepared.tasks.items()})
    records = {n: task_record(p) for n, p in prepared.tasks.items()}
    for name, values in own.items():
        if name in records and values:
            records[name]["own_values"] = values
    return records


def task_record(p) -> dict:
    """A task as ``RunStarted`` announces it (and the store records it)."""
    record = {"upstream": list(p.task.upstream), "grid": p.task.grid, "products": p.products,
              "notebook": str(p.task.notebook) if p.task.notebook else None}
    if p.command is not None:
        record["command"] = list(p.command)
    if p.task.pool is not None:
        record["pool"] = p.task.pool
    return record
