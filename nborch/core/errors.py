"""The exception hierarchy. Library code raises these; the CLI maps them to exit codes."""

from __future__ import annotations


class NborchError(Exception):
    """Base class of every error nborch raises on purpose."""

    exit_code = 1


class SpecError(NborchError):
    """A pipeline definition (YAML, Python, magic body, folder) is invalid.

    Carries every problem found, so a user fixes them in one go rather than one per run.
    """

    exit_code = 2

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return head + self.problems[0]
        items = "\n".join(f"  - {p}" for p in self.problems)
        return f"{head}{len(self.problems)} problems:\n{items}"


class ValidationError(SpecError):
    """The pipeline parses but cannot run: graph, notebooks, parameters, secrets."""


class StoreError(NborchError):
    """The run store cannot be read or written."""


class StoreUnusable(StoreError):
    """The run store cannot be written (read-only, corrupt, full): checked before a run
    starts, so nothing runs unrecorded."""

    exit_code = 2


class StoreWriteFailed(StoreError):
    """A write to the run store failed. ``transient`` when it may succeed later (a full
    disk, an I/O error, a lock held too long); else the store cannot record at all
    (read-only, corrupt)."""

    def __init__(self, message: str, cause: str, transient: bool):
        super().__init__(message)
        self.cause, self.transient = cause, transient


class RunMovedOn(StoreWriteFailed):
    """Another process took the run over (recorded it crashed, or resumed it): what this
    process would still record of it, a late result included, is discarded."""

    def __init__(self, message: str):
        super().__init__(message, "the run moved on without this process", transient=False)


class RunNotFound(StoreError):
    exit_code = 2


class SchedulerBusy(NborchError):
    """Another scheduler is active on the store (one per store)."""

    exit_code = 2


class MetricsError(NborchError):
    """Metrics cannot be served (prometheus-client missing, the port taken)."""

    exit_code = 2


def error_dict(kind: str, message: str, cell: int | None = None,
               traceback: str | None = None) -> dict:
    """A task attempt's error as stored and shown: ``{"type", "message", "cell", ...}``."""
    return {"type": kind, "message": message, "cell": cell, "cell_source": None,
            "traceback": traceback}
