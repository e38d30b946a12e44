"""A grid's instances in the run view: one folding panel per grid, its table rendered only
while the panel is open (a 300-instance table is about 170 KB of HTML: it is not re-sent
at every update while folded), with a switch to list only the failed instances."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from ...core.run import Run
from ...core.states import LAST_ATTEMPT_FAILED, State
from .. import htmlview

SHOWN_AS_FAILED = LAST_ATTEMPT_FAILED | {State.UPSTREAM_FAILED}


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
        self.table.value = htmlview.instance_table(run, names, self.base, self._labels)
