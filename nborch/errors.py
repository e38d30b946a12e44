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


class RunNotFound(StoreError):
    exit_code = 2


class ExecutionError(NborchError):
    """A task attempt failed. `type`, `message` and `cell` describe what the user's code did."""

    def __init__(self, type_: str, message: str, cell: int | None = None,
                 cell_source: str | None = None, traceback: str | None = None):
        self.type = type_
        self.message = message
        self.cell = cell
        self.cell_source = cell_source
        self.traceback = traceback
        where = f" in cell {cell}" if cell is not None else ""
        super().__init__(f"{type_}{where}: {message}")

    def to_dict(self) -> dict:
        return {"type": self.type, "message": self.message, "cell": self.cell,
                "cell_source": self.cell_source, "traceback": self.traceback}
