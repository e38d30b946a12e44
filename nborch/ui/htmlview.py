"""HTML views of a run, shared by the Jupyter widget, its static snapshot, the dashboard and
the report.

The graph comes from ``ui.rungraph`` (laid out once, recoloured by filling slots in its
SVG), re-exported here for the views. Everything else turns a ``Run`` into plain data
(texts, colours, link targets) rendered by the macros of ``templates/fragments.html.j2``:
small HTML fragments with inline styles, so they render the same in a widget, in a saved
notebook and in a standalone file. Jinja2's autoescape writes every text; a fragment comes
back as ``Markup``, so a template (or another fragment) embeds it as is.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2
import jinja2.ext
from markupsafe import Markup

from ..core import triggers
from ..core.clock import format_duration
from ..core.grouping import grid_state, groups
from ..core.grouping import summary as grid_summary
from ..core.run import Run, _seconds_between
from ..core.states import FINAL, LAST_ATTEMPT_FAILED, REASON_SHOWN, TASK_STATES, State, fill

# layout, run_edges, states_of and status_lines are re-exported for the views.
from .rungraph import (  # noqa: F401
    SvgGraph,
    layout,
    run_edges,
    running_cell,
    states_of,
    status_lines,
)

# -- the templates ---------------------------------------------------------------------------


class Compact(jinja2.ext.Extension):
    """Drops each line break and the indentation after it from the fragment templates before
    they are compiled: they are written indented, one element a line, but a task table is
    re-sent at every widget update and must stay small. A space that is meant is written."""

    COMPACTED = frozenset({"fragments.html.j2"})
    _BREAK = re.compile(r"\n[ \t]*")

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return self._BREAK.sub("", source) if name in self.COMPACTED else source


# The one environment of every HTML view (the report's page included): autoescape writes
# every value escaped unless it is Markup; an undefined name is an error, not blank.
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("nborch.ui", "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined,
                               extensions=[Compact])


@functools.cache
def _macros():
    """The macros of ``fragments.html.j2`` (compiled once, on first use)."""
    return TEMPLATES.get_template("fragments.html.j2").module


# -- small pieces -------------------------------------------------------------------------

# A fragment that depends on a few values only is rendered once per value: a macro call
# costs about 15 µs, and the live widget writes a badge and a link on each of its rows.

@functools.lru_cache(maxsize=64)
def swatch(state: str) -> Markup:
    return _macros().swatch(fill(state))


@functools.lru_cache(maxsize=64)
def state_badge(state: str) -> Markup:
    return _macros().state_badge(state, fill(state))


@functools.cache
def legend() -> Markup:
    """Every task state with its colour, drawn beside (not inside) the graph."""
    return _macros().legend([(s, fill(s)) for s in TASK_STATES])


def graph_block(svg: str | None) -> Markup:
    # The SVG is written as is, deliberately: it is Graphviz's output, which escapes the
    # task names it writes (graph.py escapes them again in its HTML-like labels, and task
    # names are checked to be plain words), and SvgGraph.render escapes every value it fills
    # in. Escaping it here would show its markup as text.
    return _macros().graph_block(None if svg is None else Markup(svg))


def short_time(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def counts_text(run: Run) -> str:
    counts = run.counts()
    return ", ".join(f"{counts[s]} {s}" for s in TASK_STATES if counts.get(s))


def finished_count(run: Run) -> int:
    return sum(1 for t in run.tasks.values() if t.status in FINAL)


def summary_text(run: Run) -> str:
    """``3/5 tasks done · 2 success, 1 running, 2 pending · 0:12 elapsed``."""
    elapsed = format_duration(run.duration)
    when = "elapsed" if run.status == State.RUNNING else "in all"
    return (f"{finished_count(run)}/{len(run.tasks)} tasks done · {counts_text(run)} · "
            f"{elapsed} {when}")


def summary_line(text: str) -> Markup:
    """A line of text beside the widget's progress bar."""
    return _macros().summary_line(text)


def zoned_time(iso: str | None) -> str:
    """``2026-11-29 21:46:02 UTC``: an ISO time to the second, with its zone said."""
    if not iso:
        return ""
    for utc in ("+00:00", "Z"):
        if iso.endswith(utc):
            return short_time(iso) + " UTC"
    zone = re.search(r"[+-]\d\d:\d\d$", iso)
    return short_time(iso) + (f" UTC{zone.group(0)}" if zone else " UTC")


def params_text(params: dict) -> str:
    """A run's parameters (``-p`` values) as ``n_rows=500, region=eu``."""
    return ", ".join(f"{k}={_param_text(v)}" for k, v in params.items())


def _run_data(run: Run) -> dict:
    return {"pipeline": run.pipeline, "run_id": run.run_id, "state": run.status,
            "colour": fill(run.status), "started": zoned_time(run.started_at),
            "trigger": triggers.shown(run.trigger),
            "logical_date": zoned_time(run.logical_date), "params": params_text(run.params)}


def header(run: Run) -> Markup:
    return _macros().header(_run_data(run))


def link_target(path: str | None, base: Path | None) -> dict | None:
    """Where a link to an executed notebook points, relative to ``base`` (the page's folder)
    if given: Jupyter and a report read from disk both resolve relative links."""
    if not path:
        return None
    text = path
    if base is not None:
        try:
            text = os.path.relpath(path, base)
        except ValueError:  # another drive
            pass
    return {"href": quote(text), "title": text, "text": Path(text).name}


@functools.lru_cache(maxsize=4096)
def link(path: str | None, base: Path | None) -> Markup:
    """A link to an executed notebook (see ``link_target``); empty without a path."""
    return _macros().link(link_target(path, base))


def short_json(value: object, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def progress_text(task) -> str:
    if task.status != State.RUNNING or not task.progress:
        return ""
    p = task.progress
    line = p.get("line") or ""
    return running_cell(p) + (f" · {line}" if line else "")


# -- the task table and the errors -------------------------------------------------------

@dataclass(slots=True)
class TaskRow:
    """What a task's row shows (``task_rows`` in the template writes it)."""
    name: str
    badge: Markup
    attempts: int | str
    duration: str
    link: Markup               # the executed notebook's, or empty
    command: str | None        # a command task's command line
    published: tuple           # (name, short JSON) of each published value
    progress: str              # the running cell, or why it did not run
    params: str = ""           # a grid instance's own parameters: ``n=197``
    kind = "task"


@dataclass(slots=True)
class GridRow:
    """A grid as one row: its instances summed up, and their rows when it has them."""
    name: str
    badge: Markup
    summary: str
    instances: tuple[TaskRow, ...] | None
    kind = "grid"


def task_data(t, base: Path | None, params: str = "") -> TaskRow:
    progress = progress_text(t)
    if not progress and t.reason and t.status in REASON_SHOWN:
        progress = t.reason
    command = None if t.command is None else shlex.join(t.command)
    return TaskRow(t.name, state_badge(t.status), t.attempts or "",
                   format_duration(t.duration) if t.started_at else "",
                   link(t.output_path, base) if command is None else Markup(), command,
                   tuple((k, short_json(v, 60)) for k, v in t.values.items()), progress,
                   params)


def grid_data(run: Run, grid: str, names: list[str], expand: bool,
              base: Path | None) -> GridRow:
    states = [run.tasks[n].status for n in names]
    labels = instance_params(run) if expand else {}
    instances = tuple(task_data(run.tasks[n], base, labels.get(n, "")) for n in names) \
        if expand else None
    return GridRow(grid, state_badge(grid_state(states)), grid_summary(states), instances)


def task_row(t, base: Path | None) -> Markup:
    return _macros().task_rows([task_data(t, base)])


def grid_row(run: Run, grid: str, names: list[str], expand: bool, base: Path | None) -> Markup:
    """A grid as one row (its instances summed up); with ``expand``, its instances' rows
    follow, folded in a ``<details>`` (for pages that are not re-rendered)."""
    return _macros().task_rows([grid_data(run, grid, names, expand, base)])


def task_table(run: Run, base: Path | None = None, max_height: str | None = "360px",
               expand_grids: bool = True) -> Markup:
    """One row per task (state, attempt, duration, executed notebook, values, progress) and
    one per grid, its instances folded under it (``expand_grids``) or left out.

    Styled with attributes and few inline styles: it stays small for a 500-task run and
    looks the same where style sheets are stripped.
    """
    rows: list[TaskRow | GridRow] = []
    grids = groups(run)
    for t in run.tasks.values():
        if not t.grid:
            rows.append(task_data(t, base))
        elif grids[t.grid][0] == t.name:
            rows.append(grid_data(run, t.grid, grids[t.grid], expand_grids, base))
    return _macros().task_table(rows, max_height)


def instance_table(run: Run, names: list[str], base: Path | None = None,
                   labels: dict[str, str] | None = None, note: str | None = None) -> Markup:
    """The rows of one grid's instances (the widget shows them in a folding panel), and a
    ``note`` above them (when not all are listed)."""
    labels = instance_params(run) if labels is None else labels
    return _macros().instance_table([task_data(run.tasks[n], base, labels.get(n, ""))
                                     for n in names], note)


def instance_params(run: Run) -> dict[str, str]:
    """Each grid instance's own parameters (``grouping.own_values``, recorded when the run
    started) as ``n=197, region=eu``: what tells ``tiny-197`` from ``tiny-198``."""
    return {name: params_text(t.own_values) for name, t in run.tasks.items() if t.own_values}


def _param_text(value: object) -> str:
    return value if isinstance(value, str) else short_json(value, 40)


def error_data(task_name: str, error: dict, open_: bool = False, label: str = "failed",
               params: str = "") -> dict:
    message = error.get("message")
    multiline = bool(message) and "\n" in str(message).strip()
    return {"task": task_name, "params": params, "label": label, "open": open_,
            "cell": f" in cell {error['cell']}" if error.get("cell") is not None else "",
            "type": str(error.get("type")), "first_line": _first_line(message),
            "message": message if multiline else "",
            "cell_source": error.get("cell_source") or "",
            "traceback": error.get("traceback") or ""}


def error_details(task_name: str, error: dict, open_: bool = False,
                  label: str = "failed") -> Markup:
    """One error, folded: a summary line, then the failing cell and the traceback."""
    return _macros().error_details(error_data(task_name, error, open_, label))


def _errors_data(run: Run) -> list[dict]:
    failed = [t for t in run.tasks.values() if t.error and t.status in LAST_ATTEMPT_FAILED]
    params = instance_params(run) if failed else {}
    return [error_data(t.name, t.error, label="failed" if t.status == State.FAILED else
                       f"attempt {t.attempts} failed, retrying", params=params.get(t.name, ""))
            for t in failed]


def errors_html(run: Run) -> Markup:
    """The error of every failed task (and the last error of a retrying one)."""
    return _macros().errors(_errors_data(run))


def error_blocks(run: Run) -> dict[str, Markup]:
    """The same errors one by one, by task: the widget draws each in its own element, so an
    error the user unfolded stays open when another task fails."""
    return {e["task"]: _macros().errors([e]) for e in _errors_data(run)}


def _first_line(text: object) -> str:
    text = str(text or "").strip()
    return text.splitlines()[0] if text else ""


# -- whole views -----------------------------------------------------------------------------

def snapshot(run: Run, graph: SvgGraph | None, base: Path | None = None) -> Markup:
    """A plain, self-contained HTML view of a run: what a saved notebook keeps."""
    return _macros().snapshot(
        _run_data(run), summary_text(run), graph_block(graph.draw(run) if graph else None),
        legend(), task_table(run, base, max_height=None), errors_html(run))


def text_summary(run: Run) -> str:
    """The same run as plain text, for front ends that show no HTML: a line per task, and
    one per grid (its instances summed up)."""
    lines = [f"{run.pipeline} run {run.run_id}: {run.status} ({summary_text(run)})"]
    if run.params:
        lines.append(f"  parameters: {params_text(run.params)}")
    grids = groups(run)
    for t in run.tasks.values():
        if t.grid:
            if grids[t.grid][0] == t.name:
                states = [run.tasks[n].status for n in grids[t.grid]]
                lines.append(f"  {t.grid:<24} {grid_state(states)} (grid: "
                             f"{grid_summary(states)})")
            continue
        extra = f" {progress_text(t)}" if progress_text(t) else ""
        lines.append(f"  {t.name:<24} {t.status}{extra}")
    return "\n".join(lines)


def run_duration(row: dict) -> str:
    """A listed run's duration (``Store.list_runs`` rows)."""
    return format_duration(_seconds_between(row["started_at"], row["ended_at"]))


def runs_table(rows: list[dict], selected: str | None = None) -> Markup:
    """Recent runs: pipeline, state, trigger, started, duration (newest first)."""
    return _macros().runs_table([
        {"run_id": r["run_id"], "pipeline": r["pipeline"], "state": r["status"],
         "colour": fill(r["status"]), "started": short_time(r["started_at"]),
         "trigger": triggers.shown(r.get("trigger")),
         "duration": run_duration(r), "selected": r["run_id"] == selected} for r in rows])


def dashboard_title(title: str, home: object) -> Markup:
    return _macros().dashboard_title(title, str(home))


def dry_run(text: str, graph: SvgGraph | None) -> Markup:
    """What ``%%orchestrate --dry-run`` shows: the check's verdict and the uncoloured graph."""
    return _macros().dry_run(text, graph_block(graph.render({}) if graph else None))
