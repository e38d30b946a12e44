"""``%orchestrate runs``: recent runs from the store; picking one shows its graph.

The list and the selected run are re-read from the store while any listed run is running
(runs of the CLI and of other kernels included), then the dashboard stops polling.
"""

from __future__ import annotations

import threading
from pathlib import Path

import ipywidgets as w

from ...core.states import State
from .. import htmlview
from .widget import Refresher, RunView, RunViewBox

POLL_SECONDS = 1.5


class RunsDashboard:
    def __init__(self, store, *, pipeline: str | None = None, limit: int = 20,
                 base: Path | None = None):
        self.store, self.pipeline, self.limit, self.base = store, pipeline, limit, base
        self._lock = threading.Lock()
        self.rows = store.list_runs(pipeline, limit)
        title = "recent runs" + (f" of {pipeline}" if pipeline else "")
        self.title = w.HTML(htmlview.dashboard_title(title, store.home))
        self.table = w.HTML()
        self.select = w.Select(options=self._options(), rows=min(8, max(2, len(self.rows))),
                               description="run", layout=w.Layout(width="640px"))
        self.select.add_class("nborch-run-select")
        self.view: RunView | None = None
        self.detail = w.VBox()
        self.widget = RunViewBox([self.title, self.table, self.select, self.detail])
        self.widget.add_class("nborch-runs-dashboard")
        self.widget.summary = self._text()
        self.table.value = htmlview.runs_table(self.rows)
        if self.rows:
            self.select.value = self.rows[0]["run_id"]
            self._show(self.rows[0]["run_id"])
        self.select.observe(self._selected, "value")

    def _options(self) -> list[tuple[str, str]]:
        return [(f"{htmlview.short_time(r['started_at'])}  {r['pipeline']}  {r['status']}",
                 r["run_id"]) for r in self.rows]

    def _text(self) -> str:
        if not self.rows:
            return "no runs recorded yet"
        return "\n".join(f"{r['run_id']}  {r['pipeline']:<20} {r['status']:<10} "
                         f"{htmlview.short_time(r['started_at'])}" for r in self.rows)

    def _selected(self, change) -> None:
        if change["new"]:
            self._show(change["new"])

    def _show(self, run_id: str) -> None:
        with self._lock:
            run = self.store.get_run(run_id)
            if self.view is None:
                self.view = RunView(run, base=self.base)
                self.detail.children = [self.view.widget]
            else:
                self.view.show(run)
            self.table.value = htmlview.runs_table(self.rows, selected=run_id)

    def refresh(self) -> bool:
        """Re-read the runs and the selected run; True when none of them is running."""
        self.rows = self.store.list_runs(self.pipeline, self.limit)
        selected = self.select.value
        options = self._options()
        if options != list(self.select.options):
            self.select.options = options
            if selected in {value for _, value in options}:
                self.select.value = selected
        if self.select.value:
            self._show(self.select.value)
        else:
            self.table.value = htmlview.runs_table(self.rows)
        self.widget.summary = self._text()
        return not any(r["status"] == State.RUNNING for r in self.rows)

    def follow(self, parent: dict | None = None) -> Refresher | None:
        """Poll the store while any listed run is running."""
        if not any(r["status"] == State.RUNNING for r in self.rows):
            return None
        return Refresher(self.refresh, interval=POLL_SECONDS, tick=0.0, parent=parent,
                         name="nborch-runs-dashboard").start()
