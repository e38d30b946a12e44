"""A run's graph as SVG, for the HTML views (``ui.htmlview``, the widget, the report).

The graph is laid out by Graphviz once (``layout``); ``SvgGraph.render`` then recolours it
for any set of task states by filling slots in the SVG text, so a 500-task graph is
recoloured in well under a millisecond instead of re-running ``dot``. A grid is one node.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

from ..core.clock import format_duration
from ..core.grouping import done_count, grid_state, groups
from ..core.run import Run
from ..core.states import State, fill
from .graph import STATUS_PLACEHOLDER

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
        # The slots are attribute and text content of an SVG that is no template: each value
        # is escaped here as it is written (the rest is Graphviz's own, escaped, output).
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
            out[name] = running_cell(t.progress)
        elif t.status == State.RUNNING:
            out[name] = "starting"
        elif t.status == State.RETRYING:
            out[name] = f"retry {t.attempts + 1}"
        elif t.status in (State.SUCCESS, State.FAILED) and t.started_at and t.ended_at:
            out[name] = format_duration(t.duration)
    return out


def running_cell(progress: Mapping) -> str:
    """``cell 8/20``: the running cell, numbered as the executed notebook numbers it (In [8],
    the injected parameters cell counted) and as a failed cell's error does (``in cell 8``).
    ``progress["cell"]`` counts the cells done."""
    return f"cell {progress['cell'] + 1}/{progress['cells']}"


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
