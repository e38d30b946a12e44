"""The live run widget: graph, progress bar, task table, errors and a Stop button.

Widgets are created once and only their traits change. Events never render: they mark the
view dirty, and one background thread (``Refresher``) renders at most every ``interval``
seconds, so a burst of a thousand events costs a handful of renders and a few comm
messages (the server drops iopub output above 1,000 messages/s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ipywidgets as w

from ...core.events import AttemptProgress, RunEnded, TaskStateChanged
from ...core.grouping import groups
from ...core.run import Run
from ...core.states import COLOURS, FAILURES, FINAL, SUCCESSFUL, State
from .. import htmlview
from .gridpanel import GridPanel

log = logging.getLogger("nborch")
RENDER_INTERVAL = 0.25   # seconds between renders, at least: four a second at most
TICK = 1.0               # render this often anyway, so the elapsed time moves


class Refresher:
    """Runs ``step()`` in one background thread after ``mark()``, at most once per ``interval``.

    ``step`` renders and returns True when there is nothing more to follow; the thread then
    calls ``on_done`` and ends. Marks that arrive while a render runs or while the thread
    waits out the interval collapse into the next render.
    """

    def __init__(self, step: Callable[[], bool], *, interval: float = RENDER_INTERVAL,
                 tick: float = TICK, on_done: Callable[[], None] | None = None,
                 parent: dict | None = None, name: str = "nborch-view"):
        self.step, self.interval, self.tick, self.on_done = step, interval, tick, on_done
        self.parent = parent
        self.renders = 0
        self._dirty = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Refresher:
        self._thread.start()
        return self

    def mark(self, event: object = None) -> None:
        """An event listener: something changed; render soon."""
        self._dirty.set()

    def stop(self) -> None:
        self._stopped = True
        self._dirty.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        _adopt_parent(self.parent)
        while True:
            self._dirty.wait(self.tick)
            self._dirty.clear()
            try:
                finished = self.step()
            except Exception:
                log.exception("nborch: the run view failed to render")
                finished = False
            self.renders += 1
            if finished or self._stopped:
                break
            time.sleep(self.interval)
        if self.on_done is not None:
            try:
                self.on_done()
            except Exception:
                log.exception("nborch: the run view failed to finish")


def _adopt_parent(parent: dict | None) -> None:
    """Make this thread's display output belong to the cell that started the view."""
    if not parent:
        return
    try:
        from IPython import get_ipython
        shell = get_ipython()
        set_thread_parent = getattr(shell, "set_thread_parent", None)
        if set_thread_parent is not None:
            set_thread_parent(parent)
    except Exception:  # not in a kernel: nothing to route
        pass


def wants_render(event: object) -> bool:
    """Events that change what the view shows (task output does not)."""
    return isinstance(event, (TaskStateChanged, AttemptProgress, RunEnded))


class RunViewBox(w.VBox):
    """The widget's container; its plain-text form is a summary of the run."""

    summary = ""

    def __repr__(self) -> str:
        return self.summary or "nborch run view"


class RunView:
    """One run drawn live. ``show(run)`` renders a Run (live or loaded from the store).

    The graph is laid out once per set of edges and then only recoloured.
    """

    def __init__(self, run: Run, *, on_stop: Callable[[], None] | None = None,
                 on_retry: Callable[[], None] | None = None, base: Path | None = None):
        self.base = base
        self._edges: dict | None = None
        self._edges_of: tuple | None = None  # the run whose edges ``_edges`` are
        self._graph: htmlview.SvgGraph | None = None
        self.header = w.HTML()
        self.bar = w.IntProgress(min=0, max=1, value=0, bar_style="info",
                                 layout=w.Layout(width="260px"))
        self.summary = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="Cancel the run: stop its kernels",
                                    layout=w.Layout(width="80px",
                                                    display="" if on_stop else "none"))
        self.retry_button = w.Button(description="Retry failed", icon="redo",
                                     tooltip="Run again the tasks that did not succeed, as a "
                                             "resume of this run", layout=w.Layout(
                                         width="120px", display="none"))
        self.graph = w.HTML(layout=w.Layout(overflow="auto", max_width="100%"))
        self.graph.add_class("nborch-graph-live")
        self.legend = w.HTML(htmlview.legend())
        self.table = w.HTML()
        # One folding panel per grid, with its instances: a panel keeps its open state while
        # its content is re-rendered (an HTML <details> would fold at every update); its
        # table is rendered only while it is open.
        self.grid_panels = w.Accordion(layout=w.Layout(display="none"))
        self.grid_panels.add_class("nborch-grids")
        self._panels: list[GridPanel] = []
        self._labels_of: object = None
        self._labels: dict[str, str] = {}
        self.grid_panels.observe(self._panel_opened, "selected_index")
        self.errors = w.VBox()  # one HTML per error: an unfolded one stays open
        self._error_views: dict[str, w.HTML] = {}
        self._on_stop, self._on_retry = on_stop, on_retry
        self._stopping = False
        self._display = None  # the DisplayHandle of the output this view is drawn in
        self._rendering = threading.RLock()
        self.notice = ""  # a message shown beside the summary (a retry that could not start)
        self.stop_button.on_click(self._stop_clicked)
        self.retry_button.on_click(self._retry_clicked)
        self.widget = RunViewBox([
            self.header, w.HBox([self.bar, self.stop_button, self.retry_button, self.summary],
                                layout=w.Layout(align_items="center")),
            self.graph, self.legend, self.table, self.grid_panels, self.errors])
        self.widget.add_class("nborch-run-view")
        self.show(run)

    # -- rendering ----------------------------------------------------------------------

    def graph_for(self, run: Run) -> htmlview.SvgGraph | None:
        key = (run.run_id, len(run.tasks))  # a run's edges do not change: not per update
        if key != self._edges_of:
            edges = htmlview.run_edges(run)
            if edges != self._edges:
                self._edges, self._graph = edges, htmlview.layout(edges)
            self._edges_of = key
        return self._graph

    def show(self, run: Run) -> None:
        """Render ``run``: only traits whose text changed are sent to the front end. The
        view's thread and a button's click (the kernel's thread) both render: one at a time,
        so that a render begun before the run ended cannot finish after the final one."""
        with self._rendering:
            self._show(run)

    def _show(self, run: Run) -> None:
        graph = self.graph_for(run)
        total = len(run.tasks)
        self.run = run
        self.header.value = htmlview.header(run)
        self.bar.max = max(total, 1)
        # Cancelled tasks did not run: a cancelled run's bar is not full.
        self.bar.value = sum(1 for t in run.tasks.values()
                             if t.status in FINAL and t.status != State.CANCELLED)
        self.bar.description = f"{self.bar.value}/{total}"
        self.bar.bar_style = COLOURS[run.status].bar if run.status in COLOURS else "info"
        running = run.status == State.RUNNING
        stopping = " · stopping…" if self._stopping and running else ""
        notice = f" · {self.notice}" if self.notice else ""
        self.summary.value = htmlview.summary_line(htmlview.summary_text(run) + stopping + notice)
        self.graph.value = htmlview.graph_block(graph.draw(run) if graph else None)
        # A scroll box only for a long table: the demo's five tasks are all in view.
        rows = len(self._edges or ())
        self.table.value = htmlview.task_table(run, self.base, expand_grids=False,
                                               max_height="480px" if rows > 20 else None)
        self._show_grids(run)
        self._show_errors(run)
        self.widget.summary = htmlview.text_summary(run)
        self.stop_button.disabled = not running or self._stopping
        self.stop_button.layout.display = "" if self._on_stop and running else "none"
        retryable = self.retryable
        self.retry_button.description = "Retry failed" if any(
            t.status in FAILURES for t in run.tasks.values()) else "Resume"
        self.retry_button.layout.display = "" if retryable else "none"
        self.retry_button.disabled = not retryable

    @property
    def retryable(self) -> bool:
        """The run has ended with tasks that did not succeed, and this view can resume it."""
        return self._on_retry is not None and self.run.status != State.RUNNING and any(
            t.status not in SUCCESSFUL for t in self.run.tasks.values())

    def _show_errors(self, run: Run) -> None:
        """Each error in its own element, re-sent only when that error changes."""
        views = []
        for task, block in htmlview.error_blocks(run).items():
            view = self._error_views.setdefault(task, w.HTML())
            view.value = block
            views.append(view)
        if tuple(views) != tuple(self.errors.children):
            self.errors.children = tuple(views)

    def _show_grids(self, run: Run) -> None:
        grids = groups(run)
        if len(self._panels) != len(grids):
            self._panels = [GridPanel(self.base) for _ in grids]
            self.grid_panels.children = [panel.widget for panel in self._panels]
            self.grid_panels.layout.display = "" if grids else "none"
        if run.run_id != self._labels_of:  # a grid instance's parameters, once per run
            self._labels_of, self._labels = run.run_id, htmlview.instance_params(run)
        titles = []
        for i, (panel, (grid, names)) in enumerate(zip(self._panels, grids.items())):
            panel.update(run, names, self._labels, self.grid_panels.selected_index == i)
            titles.append(f"{grid} (grid): "
                          + htmlview.grid_summary([run.tasks[n].status for n in names]))
        if tuple(titles) != tuple(self.grid_panels.titles):
            self.grid_panels.titles = tuple(titles)

    def _panel_opened(self, change) -> None:
        for i, panel in enumerate(self._panels):
            panel.is_open = change["new"] == i
            panel.render()

    def snapshot(self) -> str:
        return htmlview.snapshot(self.run, self.graph_for(self.run), self.base)

    # -- the cell's output ----------------------------------------------------------------

    def display(self) -> None:
        """Draw the live view in the cell's output; ``finish`` redraws that same output."""
        from IPython.display import display
        self._display = display(self.widget, display_id=True)

    def finish(self) -> None:
        """The run has ended: its output becomes the final state, once, in place of the live
        view. A plain HTML and text copy is what a saved notebook keeps and shows where
        widgets do not render (GitHub, nbviewer, a notebook reopened without its kernel);
        when the run can still be resumed, the widget stays first in the output, for its
        button. Without a live output yet (a recorded run), the final state is displayed."""
        from IPython.display import display
        with self._rendering:
            final = {"text/html": self.snapshot(), "text/plain": htmlview.text_summary(self.run)}
            retryable = self.retryable
            bundle = {**self.widget._repr_mimebundle_(), **final} if retryable else final
            if self._display is None:
                self._display = display(bundle, raw=True, display_id=True)
            else:
                self._display.update(bundle, raw=True)
            if not retryable:
                close_tree(self.widget)  # no output shows it any more

    def follow(self, run: Run, on_stop: Callable[[], None] | None) -> None:
        """Show another live run (a resume of this one) with its own Stop."""
        self._on_stop, self._stopping, self.notice = on_stop, False, ""
        self.stop_button.layout.display = "" if on_stop else "none"
        self.show(run)

    def _retry_clicked(self, _button) -> None:
        if self._on_retry is None or self.run.status == State.RUNNING:
            return
        self.retry_button.disabled = True
        try:
            self._on_retry()
        except Exception as exc:  # nothing to resume, the pipeline file changed, ...
            self.notice = f"retry not started: {exc}"
            self.show(self.run)

    def _stop_clicked(self, _button) -> None:
        if self._on_stop is not None and self.run.status == State.RUNNING:
            self._stopping = True
            self.stop_button.disabled = True
            self._on_stop()
            self.show(self.run)


def close_tree(widget: w.Widget) -> None:
    """Close a widget and the widgets it contains (their models leave the front end)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


def follow_handle(view: RunView, handle, *, parent: dict | None = None,
                  on_done: Callable[[], None] | None = None) -> Refresher:
    """Keep ``view`` current with a run of this process: events mark it dirty."""
    def step() -> bool:
        done = handle.done  # read first: after it is set, the Run holds its final state
        view.show(handle.run)
        return done

    refresher = Refresher(step, parent=parent, on_done=on_done,
                          name=f"nborch-view-{handle.run_id}")
    handle.subscribe(lambda event: refresher.mark() if wants_render(event) else None)
    return refresher.start()


def follow_store(view: RunView, store, run_id: str, *, parent: dict | None = None,
                 on_done: Callable[[], None] | None = None, poll: float = 1.0) -> Refresher:
    """Keep ``view`` current with a run of any process, by reading the store every ``poll`` s."""
    def step() -> bool:
        run = store.get_run(run_id)
        view.show(run)
        return run.status != State.RUNNING

    return Refresher(step, interval=poll, tick=0.0, parent=parent, on_done=on_done,
                     name=f"nborch-poll-{run_id}").start()
