"""HTML views of a run, shared by the Jupyter widget, its static snapshot and the report.

The graph is laid out by Graphviz once (``layout``); ``SvgGraph.render`` then recolours it
for any set of task states by filling slots in the SVG text, so a 500-task graph is
recoloured in well under a millisecond instead of re-running ``dot``. Everything else here
turns a ``Run`` into small HTML fragments with inline styles, so they render the same in a
widget, in a saved notebook and in a standalone file.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import quote

from ..core.clock import format_duration
from ..core.grouping import done_count, grid_state, groups
from ..core.grouping import summary as grid_summary
from ..core.run import Run
from ..core.states import FINAL, LAST_ATTEMPT_FAILED, NOT_RUN, TASK_STATES, State, fill
from .graph import STATUS_PLACEHOLDER

FONT = "font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:13px"
_NODE_RE = re.compile(r'<g id="([^"]*)" class="node">')
_FILL_RE = re.compile(r'fill="([^"]*)"')
_TIP_RE = re.compile(r'xlink:title="([^"]*)"')
_LINE_RE = re.compile(f"({STATUS_PLACEHOLDER})")
_NODE_GROUP_RE = re.compile(r'<g id="[^"]*" class="node">.*?</g>', re.S)
_SHAPE_XS_RE = re.compile(r'\b(?:d|points)="([^"]*)"|\bcx="([-\d.]+)"')
_STATUS_TEXT_RE = re.compile(f'<text text-anchor="start" x="[-\\d.]+"([^>]*>{STATUS_PLACEHOLDER})')


class SvgGraph:
    """A laid-out Graphviz SVG whose node fills, tooltips and status lines can be rewritten
    quickly.

    Each node is ``<g id="TASK" class="node">``; the first ``fill`` after it is its shape's,
    and its second label line (when laid out with one) holds ``STATUS_PLACEHOLDER``.
    The SVG is cut once into constant text and per-node slots; ``render`` joins them.
    """

    def __init__(self, svg: str):
        start = svg.find("<svg")
        svg = svg[start:] if start >= 0 else svg
        svg = svg.replace("<svg ", '<svg style="max-width:none" ', 1)
        svg = _NODE_GROUP_RE.sub(_center_status_line, svg)
        self.names: list[str] = []
        self._parts: list[str] = []   # text, slot, text, slot, ..., text
        self._slots: list[tuple[str, str]] = []  # (task, "fill" | "tip" | "line")
        pos = 0
        for node in _NODE_RE.finditer(svg):
            name = html.unescape(node.group(1))
            fill = _FILL_RE.search(svg, node.end())
            if fill is None:
                continue
            self.names.append(name)
            tip = _TIP_RE.search(svg, node.end(), fill.start())
            end = svg.find("</g>", fill.end())
            line = _LINE_RE.search(svg, fill.end(), end if end >= 0 else len(svg))
            for match, kind in ((tip, "tip"), (fill, "fill"), (line, "line")):
                if match is None:
                    continue
                self._parts.append(svg[pos:match.start(1)])
                self._slots.append((name, kind))
                pos = match.end(1)
        self._parts.append(svg[pos:])

    def render(self, states: Mapping[str, str], lines: Mapping[str, str] | None = None) -> str:
        """The SVG with each node filled by its state's colour (tooltips name the state) and
        ``lines[task]`` written under the task's name."""
        out = []
        lines = lines or {}
        for text, (name, kind) in zip(self._parts, self._slots):
            out.append(text)
            state = states.get(name)
            if kind == "fill":
                out.append(fill(state))
            elif kind == "tip":
                line = f" · {lines[name]}" if lines.get(name) else ""
                out.append(html.escape(f"{name}: {state}{line}" if state else name))
            else:
                out.append(html.escape(lines.get(name, "")))
        out.append(self._parts[-1])
        return "".join(out)

    def draw(self, run: Run) -> str:
        """The SVG of ``run``: coloured by state, each task's status under its name."""
        return self.render(states_of(run), status_lines(run))


def _center_status_line(node: re.Match) -> str:
    """Graphviz starts every line of an HTML-like label at a fixed x; centre the status line
    on the node's shape instead, since its text will be shorter or longer than the
    placeholder it was laid out with."""
    group = node.group(0)
    shape = _SHAPE_XS_RE.search(group)
    if shape is None or STATUS_PLACEHOLDER not in group:
        return group
    if shape.group(2) is not None:
        center = float(shape.group(2))
    else:
        xs = [float(x) for x in re.findall(r"(-?[\d.]+),-?[\d.]+", shape.group(1))]
        if not xs:
            return group
        center = (min(xs) + max(xs)) / 2
    return _STATUS_TEXT_RE.sub(lambda m: f'<text text-anchor="middle" x="{center:g}"{m.group(1)}',
                               group, count=1)


def layout(edges: Mapping[str, Sequence[str]]) -> SvgGraph | None:
    """Lay the graph out with Graphviz once (with a status line under each task name);
    None when ``dot`` is not installed."""
    from . import graph
    if not graph.have_dot():
        return None
    return SvgGraph(graph.render_svg(edges, status_line=True))


def status_lines(run: Run) -> dict[str, str]:
    """What a run view writes under each node's name: the running cell, else the duration;
    for a grid, how many of its instances are done (and failed)."""
    out = {}
    for grid, names in groups(run).items():
        states = [run.tasks[n].status for n in names]
        done, failed = done_count(states), states.count(State.FAILED)
        out[grid] = f"{done}/{len(states)}" + (f" · {failed} failed" if failed else "")
    for name, t in run.tasks.items():
        if t.grid:
            continue
        if t.status == State.RUNNING and t.progress:
            out[name] = f"cell {t.progress['cell']}/{t.progress['cells']}"  # as progress_text
        elif t.status == State.RUNNING:
            out[name] = "starting"
        elif t.status == State.RETRYING:
            out[name] = f"retry {t.attempts + 1}"
        elif t.status in (State.SUCCESS, State.FAILED) and t.started_at and t.ended_at:
            out[name] = format_duration(t.duration)
    return out


def run_edges(run: Run) -> dict[str, tuple[str, ...]]:
    """The graph of a run's views: one node per task, and one per grid (not per instance),
    so a 500-instance grid stays one node and the graph stays fast."""
    node = {name: t.grid or name for name, t in run.tasks.items()}
    edges: dict[str, tuple[str, ...]] = {}
    for name, t in run.tasks.items():
        ups = tuple(dict.fromkeys(node[u] for u in t.upstream))
        edges[node[name]] = tuple(dict.fromkeys(edges.get(node[name], ()) + ups))
    return edges


def states_of(run: Run) -> dict[str, str]:
    """State by graph node (see ``run_edges``)."""
    out = {name: t.status for name, t in run.tasks.items() if not t.grid}
    out.update({grid: grid_state([run.tasks[n].status for n in names])
                for grid, names in groups(run).items()})
    return out


# -- small pieces -------------------------------------------------------------------------

def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def swatch(state: str) -> str:
    return (f'<span style="display:inline-block;width:9px;height:9px;border:1px solid #6b7280;'
            f'background:{fill(state)};margin-right:4px"></span>')


def state_badge(state: str) -> str:
    return f'<span class="nborch-state nborch-{esc(state)}">{swatch(state)}{esc(state)}</span>'


def legend() -> str:
    """Every task state with its colour, drawn beside (not inside) the graph."""
    items = "".join(f'<span style="margin-right:12px;white-space:nowrap">{swatch(s)}{s}</span>'
                    for s in TASK_STATES)
    return f'<div class="nborch-legend" style="{FONT};color:#374151;margin:4px 0">{items}</div>'


def graph_block(svg: str | None) -> str:
    if svg is None:
        return (f'<div class="nborch-graph" style="{FONT};color:#6b7280">(no graph: Graphviz\'s '
                "<code>dot</code> is not installed)</div>")
    return f'<div class="nborch-graph" style="overflow:auto;max-width:100%">{svg}</div>'


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


def header(run: Run) -> str:
    return (f'<div style="{FONT}"><b>{esc(run.pipeline)}</b> run <code>{esc(run.run_id)}</code> '
            f'{state_badge(run.status)} <span style="color:#6b7280">started '
            f'{esc(short_time(run.started_at))} UTC</span></div>')


def link(path: str | None, base: Path | None) -> str:
    """A link to an executed notebook, relative to ``base`` (the page's folder) if given:
    Jupyter and a report read from disk both resolve relative links."""
    if not path:
        return ""
    target = text = path
    if base is not None:
        try:
            target = text = os.path.relpath(path, base)
        except ValueError:  # another drive
            pass
    name = Path(text).name
    return (f'<a href="{esc(quote(target))}" target="_blank" title="{esc(text)}" '
            f'style="color:#2563eb;text-decoration:underline">{esc(name)}</a>')


def short_json(value: object, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def progress_text(task) -> str:
    if task.status != State.RUNNING or not task.progress:
        return ""
    p = task.progress
    line = p.get("line") or ""
    return f"cell {p['cell']}/{p['cells']}" + (f" · {line}" if line else "")


# -- the task table and the errors -------------------------------------------------------

_TH = "text-align:left;border-bottom:1px solid #d1d5db"
_TR = ' valign="top" style="border-top:1px solid #f3f4f6"'
_TABLE = f'cellpadding="3" cellspacing="0" style="{FONT};border-collapse:collapse;margin:6px 0"'


def task_row(t, base: Path | None) -> str:
    values = "<br>".join(f"<code>{esc(k)}</code> = {esc(short_json(v, 60))}"
                         for k, v in t.values.items())
    progress = progress_text(t)
    if not progress and t.reason and t.status in NOT_RUN:
        progress = t.reason
    duration = esc(format_duration(t.duration)) if t.started_at else ""
    return (f'<tr data-task="{esc(t.name)}"{_TR}><td><b>{esc(t.name)}</b></td>'
            f"<td>{state_badge(t.status)}</td><td>{t.attempts or ''}</td>"
            f"<td>{duration}</td><td>{_notebook_cell(t, base)}</td><td>{values}</td>"
            f"<td>{esc(progress)}</td></tr>")


def _notebook_cell(t, base: Path | None) -> str:
    """The executed notebook's link, or a command task's command line."""
    if t.command is None:
        return link(t.output_path, base)
    import shlex
    return f"<code>$ {esc(shlex.join(t.command))}</code>"


def grid_row(run: Run, grid: str, names: list[str], expand: bool, base: Path | None) -> str:
    """A grid as one row (its instances summed up); with ``expand``, its instances' rows
    follow, folded in a ``<details>`` (for pages that are not re-rendered)."""
    states = [run.tasks[n].status for n in names]
    row = (f'<tr data-task="{esc(grid)}" class="nborch-grid"{_TR}><td><b>{esc(grid)}</b> '
           f'<span style="color:#6b7280">(grid)</span></td><td>{state_badge(grid_state(states))}'
           f"</td><td></td><td></td><td></td><td></td><td>{esc(grid_summary(states))}</td></tr>")
    if not expand:
        return row
    inner = "".join(task_row(run.tasks[n], base) for n in names)
    return (f'{row}<tr><td colspan="7"><details><summary>{len(names)} instances of '
            f'{esc(grid)}</summary><table {_TABLE}><tbody>{inner}</tbody></table></details>'
            "</td></tr>")


def task_table(run: Run, base: Path | None = None, max_height: str | None = "360px",
               expand_grids: bool = True) -> str:
    """One row per task (state, attempt, duration, executed notebook, values, progress) and
    one per grid, its instances folded under it (``expand_grids``) or left out.

    Styled with attributes and few inline styles: it stays small for a 500-task run and
    looks the same where style sheets are stripped.
    """
    rows, grids = [], groups(run)
    for t in run.tasks.values():
        if not t.grid:
            rows.append(task_row(t, base))
        elif grids[t.grid][0] == t.name:
            rows.append(grid_row(run, t.grid, grids[t.grid], expand_grids, base))
    head = "".join(f'<th style="{_TH}">{c}</th>' for c in
                   ("task", "state", "attempt", "duration", "notebook", "values", "progress"))
    box = f"overflow:auto;max-height:{max_height}" if max_height else ""
    return (f'<div class="nborch-tasks" style="{box}"><table {_TABLE}><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>')


def instance_table(run: Run, names: list[str], base: Path | None = None) -> str:
    """The rows of one grid's instances (the widget shows them in a folding panel)."""
    return (f'<div class="nborch-tasks" style="overflow:auto;max-height:360px"><table {_TABLE}>'
            f'<tbody>{"".join(task_row(run.tasks[n], base) for n in names)}</tbody></table></div>')


def error_details(task_name: str, error: dict, open_: bool = False, label: str = "failed") -> str:
    """One error, folded: a summary line, then the failing cell and the traceback."""
    cell = f" in cell {error['cell']}" if error.get("cell") is not None else ""
    summary = (f"<b>{esc(task_name)}</b> {esc(label)}{esc(cell)}: <b>{esc(error.get('type'))}</b>: "
               f"{esc(_first_line(error.get('message')))}")
    body = []
    if error.get("message") and "\n" in str(error["message"]).strip():
        body.append(f"<div>{esc(error['message'])}</div>")
    if error.get("cell_source"):
        body.append(f'<div style="margin-top:4px">failing cell{esc(cell)}:</div>'
                    f'<pre class="nborch-cell" style="{_PRE}">{esc(error["cell_source"])}</pre>')
    if error.get("traceback"):
        body.append(f'<pre class="nborch-traceback" style="{_PRE}">{esc(error["traceback"])}</pre>')
    return (f'<details class="nborch-error"{" open" if open_ else ""} style="margin:4px 0">'
            f'<summary style="cursor:pointer;color:#991b1b">{summary}</summary>'
            f'{"".join(body)}</details>')


_PRE = ("background:#f9fafb;border:1px solid #e5e7eb;padding:6px;margin:4px 0;overflow:auto;"
        "max-height:300px;white-space:pre;font-size:12px")


def errors_html(run: Run) -> str:
    """The error of every failed task (and the last error of a retrying one)."""
    parts = [error_details(t.name, t.error, label="failed" if t.status == State.FAILED else
                           f"attempt {t.attempts} failed, retrying")
             for t in run.tasks.values() if t.error and t.status in LAST_ATTEMPT_FAILED]
    return f'<div class="nborch-errors" style="{FONT}">{"".join(parts)}</div>' if parts else ""


def _first_line(text: object) -> str:
    text = str(text or "").strip()
    return text.splitlines()[0] if text else ""


# -- whole views -----------------------------------------------------------------------------

def snapshot(run: Run, graph: SvgGraph | None, base: Path | None = None) -> str:
    """A plain, self-contained HTML view of a run: what a saved notebook keeps."""
    svg = graph.draw(run) if graph else None
    return (f'<div class="nborch-snapshot" data-run="{esc(run.run_id)}" style="{FONT}">'
            f"{header(run)}<div style=\"margin:4px 0;color:#374151\">{esc(summary_text(run))}</div>"
            f"{graph_block(svg)}{legend()}{task_table(run, base, max_height=None)}"
            f"{errors_html(run)}</div>")


def text_summary(run: Run) -> str:
    """The same run as plain text, for front ends that show no HTML."""
    lines = [f"{run.pipeline} run {run.run_id}: {run.status} ({summary_text(run)})"]
    for t in run.tasks.values():
        extra = f" {progress_text(t)}" if progress_text(t) else ""
        lines.append(f"  {t.name:<24} {t.status}{extra}")
    return "\n".join(lines)


def runs_table(rows: list[dict], selected: str | None = None) -> str:
    """Recent runs: pipeline, state, started, duration (newest first)."""
    from ..core.run import _seconds_between
    body = []
    for r in rows:
        mark = ' bgcolor="#eff6ff"' if r["run_id"] == selected else ""
        duration = format_duration(_seconds_between(r["started_at"], r["ended_at"]))
        body.append(f'<tr data-run="{esc(r["run_id"])}"{_TR}{mark}><td><code>{esc(r["run_id"])}'
                    f'</code></td><td>{esc(r["pipeline"])}</td><td>{state_badge(r["status"])}</td>'
                    f"<td>{esc(short_time(r['started_at']))}</td><td>{esc(duration)}</td></tr>")
    head = "".join(f'<th style="{_TH}">{c}</th>' for c in
                   ("run", "pipeline", "state", "started (UTC)", "duration"))
    if not rows:
        return f'<div style="{FONT};color:#6b7280">no runs recorded yet</div>'
    return (f'<div class="nborch-runs" style="overflow:auto;max-height:260px"><table {_TABLE}>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
