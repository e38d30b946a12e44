"""``--incremental``: a task identical to its last successful run is skipped and that
run's results reused. Identical means the same fingerprint (its notebook's cells, resolved
parameters, kernel, declared products, and which execution produced each upstream result)
and the results still there (the notebook, the declared products)."""

from __future__ import annotations

from collections.abc import Iterable

from ..core.run import Run
from ..execution import outputs
from ..spec.validate import PreparedRun, stable_hash
from ..store.store import Store


class Incremental:
    def __init__(self, prepared: PreparedRun, run: Run, store: Store, enabled: bool,
                 force: Iterable[str] = ()):
        self.prepared, self.run, self.store = prepared, run, store
        self.enabled = enabled
        self.force = set(force)  # run these whatever their fingerprint
        self._checked: set[str] = set()  # each task is checked once: its upstream is final

    def fingerprint(self, name: str) -> str:
        """What a task's result depends on (see the module's docstring)."""
        p = self.prepared.tasks[name]
        ups = {u: [self.run.tasks[u].fingerprint, self.run.tasks[u].result_of]
               for u in p.task.upstream}
        doc = {"source": p.source_hash, "parameters": p.parameters, "kernel": p.kernel,
               "upstream": ups}
        if p.products:  # only when declared, so older fingerprints stay valid
            doc["products"] = p.products
        return stable_hash(doc)

    def reusable(self, name: str) -> dict | None:
        """The last successful run's record of ``name`` (its values, notebook, fingerprint,
        ``result_of``) when this run may reuse it instead of running the task."""
        if not self.enabled or name in self.force or name in self._checked:
            return None
        self._checked.add(name)
        fingerprint = self.fingerprint(name)
        last = self.store.last_success(self.prepared.pipeline.name, name)
        p = self.prepared.tasks[name]
        kept = list(p.products.values())  # what the earlier run left that this one would reuse
        if p.command is None:
            kept.append(last and last["output_path"])
        if not last or last["fingerprint"] != fingerprint or \
                not all(path and outputs.exists(path) for path in kept):
            return None
        return {**last, "fingerprint": fingerprint}
