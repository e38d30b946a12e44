"""``%orchestrate runs``: the recent runs of the store, one clickable row each; a click opens
that run's view (live while it runs, with Stop and Retry).

While it is displayed the dashboard polls the store: a stat of its files every
``POLL_SECONDS``, and a read only when they changed (or while a listed run is running), so
runs started later by the CLI, the scheduler or another notebook appear in the list.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import ipywidgets as w

from ...core.states import State
from .. import htmlview
from . import actions
from .widget import Refresher, RunView, RunViewBox, close_tree

POLL_SECONDS = 1.5
COLUMNS = ("run", "state", "pipeline", "started (UTC)", "duration")


class RunRow:
    """One run's row: a button with its id (a click shows the run), then its state, pipeline,
    start and duration. Rows are re-used as the list changes; texts are Labels (never HTML)."""

    def __init__(self, on_click):
        self.run_id: str | None = None
        self.button = w.Button(tooltip="show this run", layout=w.Layout(width="auto"))
        self.button.add_class("nborch-run-row")
        self.button.on_click(lambda _b: on_click(self.run_id))
        self.state = w.HTML()
        self.pipeline, self.started, self.duration = w.Label(), w.Label(), w.Label()
        self.cells = [self.button, self.state, self.pipeline, self.started, self.duration]

    def show(self, row: dict, selected: bool) -> None:
        self.run_id = row["run_id"]
        self.button.description = row["run_id"]
        # The shown run's row: an icon and bold text in the theme's own button colours (a
        # coloured button style reads at 3.5:1 in JupyterLab's light theme).
        self.button.icon = "eye" if selected else ""
        self.button.style.font_weight = "bold" if selected else ""
        self.state.value = htmlview.state_badge(row["status"])
        self.pipeline.value = row["pipeline"]
        self.started.value = htmlview.short_time(row["started_at"])
        self.duration.value = htmlview.run_duration(row)


class RunsDashboard:
    def __init__(self, store, *, pipeline: str | None = None, limit: int = 20,
                 base: Path | None = None, parent: dict | None = None):
        self.store, self.pipeline, self.limit, self.base = store, pipeline, limit, base
        self.parent = parent
        self._lock = threading.RLock()
        self._stamp: tuple | None = None
        self.rows: list[dict] = []
        self.selected: str | None = None
        self.view: RunView | None = None
        self._follower: Refresher | None = None
        title = "recent runs" + (f" of {pipeline}" if pipeline else "")
        self.title = w.HTML(htmlview.dashboard_title(title, store.home))
        self.empty = w.HTML(htmlview.runs_table([]))
        self._row_widgets: list[RunRow] = []
        head = [w.Label(c, style={"font_weight": "bold"}) for c in COLUMNS]
        self.list = w.GridBox(head, layout=w.Layout(
            grid_template_columns="repeat(5, max-content)", grid_gap="2px 14px",
            align_items="center", max_height="300px", overflow="auto"))
        self.list.add_class("nborch-runs")
        self.detail = w.VBox()
        self.widget = RunViewBox([self.title, self.empty, self.list, self.detail])
        self.widget.add_class("nborch-runs-dashboard")
        self._head = head
        self.refresh()
        self._draw_rows()
        if self.rows:
            self.select(self.rows[0]["run_id"])

    # -- the list -------------------------------------------------------------------------

    def _store_stamp(self) -> tuple:
        """The store's files as last written: a new run or state changes it."""
        out = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(f"{self.store.path}{suffix}")
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def refresh(self) -> bool:
        """Re-read the list (and the shown run) if the store changed; False: keep polling
        while the dashboard is displayed."""
        if self.widget.comm is None:  # closed: nothing shows it any more
            return True
        stamp = self._store_stamp()
        running = any(r["status"] == State.RUNNING for r in self.rows)
        if stamp == self._stamp and not running:
            return False
        self._stamp = stamp
        with self._lock:
            rows = self.store.list_runs(self.pipeline, self.limit)
            if rows != self.rows:
                self.rows = rows
                self._draw_rows()
            if self.selected is not None and actions.live_handle(self.selected) is None:
                self._show_recorded(self.selected)
        return False

    def _draw_rows(self) -> None:
        while len(self._row_widgets) < len(self.rows):
            self._row_widgets.append(RunRow(self.select))
        shown = self._row_widgets[:len(self.rows)]
        for row_widget, row in zip(shown, self.rows):
            row_widget.show(row, row["run_id"] == self.selected)
        children = tuple(self._head) + tuple(c for r in shown for c in r.cells)
        if children != tuple(self.list.children):
            self.list.children = children
        self.empty.layout.display = "none" if self.rows else ""
        self.list.layout.display = "" if self.rows else "none"
        self.widget.summary = self._text()

    def _text(self) -> str:
        if not self.rows:
            return "no runs recorded yet"
        return "\n".join(f"{r['run_id']}  {r['pipeline']:<20} {r['status']:<10} "
                         f"{htmlview.short_time(r['started_at'])}" for r in self.rows)

    # -- the selected run -----------------------------------------------------------------

    def select(self, run_id: str | None) -> None:
        """Show ``run_id``'s view under the list (a run of this kernel follows its events)."""
        if run_id is None:
            return
        with self._lock:
            self.selected = run_id
            self._draw_rows()
            if self._follower is not None:
                self._follower.stop()
                self._follower = None
            handle = actions.live_handle(run_id)
            run = handle.run if handle is not None else self.store.get_run(run_id)
            self._new_view(run)
            if handle is not None:
                self._follow(handle)

    def _new_view(self, run) -> None:
        old = self.view
        self.view = RunView(run, base=self.base,
                            on_stop=actions.stop_action(run.run_id, self.store.home),
                            on_retry=lambda: self._retry(run.run_id))
        self.detail.children = [self.view.widget]
        if old is not None:
            close_tree(old.widget)

    def _show_recorded(self, run_id: str) -> None:
        if self.view is not None and self.view.run.run_id == run_id:
            self.view.show(self.store.get_run(run_id))

    def _retry(self, run_id: str) -> None:
        handle = actions.resume(self.store.get_run(run_id))
        self.view.follow(handle.run, handle.cancel)
        self._follow(handle)

    def _follow(self, handle) -> None:
        from .widget import follow_handle
        self._follower = follow_handle(self.view, handle, parent=self.parent)

    def follow(self) -> Refresher:
        """Poll the store while the dashboard is displayed (ends when it is closed)."""
        return Refresher(self.refresh, interval=POLL_SECONDS, tick=0.0, parent=self.parent,
                         name="nborch-runs-dashboard").start()
