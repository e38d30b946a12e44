"""A grid's instances in the run view: one folding panel per grid, its table rendered only
while the panel is open (a 300-instance table is about 170 KB of HTML: it is not re-sent
at every update while folded), with a switch to list only the failed instances. A panel
lists at most ``ROWS_SHOWN`` instances, those that need an eye first (a 10,000-row table
took 0.6 s to render at every update, and megabytes to send)."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from ...core.run import Run
from ...core.states import ACTIVE, LAST_ATTEMPT_FAILED, State
from .. import htmlview

SHOWN_AS_FAILED = LAST_ATTEMPT_FAILED | {State.UPSTREAM_FAILED}
ROWS_SHOWN = 200
_FIRST = (SHOWN_AS_FAILED, frozenset(ACTIVE))  # failed, then running or queued, then others


class GridPanel:
    def __init__(self, base: Path | None):
        self.base = base
        self.failed_only = w.Checkbox(description="only failed instances", indent=False,
                                      layout=w.Layout(width="auto"))
        self.failed_only.add_class("nborch-failed-only")
        self.table = w.HTML()
        self.widget = w.VBox([self.failed_only, self.table])
        self.is_open = False
        self._run: Run | None = None
        self._names: list[str] = []
        self._labels: dict[str, str] = {}
        self.failed_only.observe(lambda _change: self.render(), "value")

    def update(self, run: Run, names: list[str], labels: dict[str, str], is_open: bool) -> None:
        self._run, self._names, self._labels, self.is_open = run, names, labels, is_open
        self.render()

    def render(self) -> None:
        if not self.is_open or self._run is None:
            return
        run, names = self._run, self._names
        if self.failed_only.value:
            names = [n for n in names if run.tasks[n].status in SHOWN_AS_FAILED]
        shown = first_shown(run, names)
        note = None if len(shown) == len(names) else (
            f"{len(shown):,} of {len(names):,} instances: the failed, then the running "
            f"and queued, then the first others; `nborch show {run.run_id}` lists them all")
        self.table.value = htmlview.instance_table(run, shown, self.base, self._labels, note)


def first_shown(run: Run, names: list[str], limit: int = ROWS_SHOWN) -> list[str]:
    """``names`` when they are ``limit`` or fewer; else ``limit`` of them, those failed
    first, then those running or queued, then the others, listed in the grid's order."""
    if len(names) <= limit:
        return names
    chosen: set[str] = set()
    for states in (*_FIRST, None):
        for name in names:
            if len(chosen) == limit:
                return [n for n in names if n in chosen]
            if states is None or run.tasks[name].status in states:
                chosen.add(name)
    return [n for n in names if n in chosen]
