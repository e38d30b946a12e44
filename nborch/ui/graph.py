"""Graphviz drawing of a pipeline or a run, shared by ``plot``, the widget and the report
(state colours: ``core.states.COLOURS``).

Each node's Graphviz name (and ``id``) is its task name, so a view can recolour a laid-out
SVG by id instead of laying it out again.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.errors import NborchError
from ..core.states import fill


def have_dot() -> bool:
    return shutil.which("dot") is not None


# Run views write a short status under each task name ("cell 3/20", "4.2s") without laying
# the graph out again: the layout reserves a second label line of figure spaces.
STATUS_PLACEHOLDER = "\u2007" * 12
STATUS_FONT_SIZE = 9


def digraph(edges: Mapping[str, Sequence[str]], states: Mapping[str, str] | None = None,
            name: str = "pipeline", status_line: bool = False):
    """A ``graphviz.Digraph`` of the tasks, filled by state when ``states`` is given; with
    ``status_line``, each node has an empty second line for a view to fill in."""
    import graphviz
    g = graphviz.Digraph(name, graph_attr={"rankdir": "LR", "bgcolor": "transparent",
                                            "nodesep": "0.25", "ranksep": "0.45"},
                         node_attr={"shape": "box", "style": "rounded,filled",
                                    "fontname": "Helvetica", "fontsize": "11", "color": "#6b7280",
                                    "height": "0.35"},
                         edge_attr={"color": "#6b7280", "arrowsize": "0.7"})
    for task in edges:
        state = (states or {}).get(task)
        label = (f'<{html.escape(task)}<BR/><FONT POINT-SIZE="{STATUS_FONT_SIZE}" COLOR="#374151">'
                 f'{STATUS_PLACEHOLDER}</FONT>>') if status_line else task
        g.node(task, label=label, id=task, fillcolor=fill(state),
               tooltip=f"{task}: {state}" if state else task)
    for task, ups in edges.items():
        for up in ups:
            g.edge(up, task)
    return g


def render_svg(edges: Mapping[str, Sequence[str]], states: Mapping[str, str] | None = None,
               status_line: bool = False) -> str:
    _require_dot()
    return digraph(edges, states, status_line=status_line).pipe(format="svg").decode("utf-8")


def write(edges: Mapping[str, Sequence[str]], path: str | Path,
          states: Mapping[str, str] | None = None) -> Path:
    """Draw to ``path``; the format follows the suffix (svg, png, pdf, dot)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "svg"
    g = digraph(edges, states)
    if fmt in ("dot", "gv"):
        path.write_text(g.source, encoding="utf-8")
        return path
    if fmt not in ("svg", "png", "pdf", "jpg", "jpeg"):
        raise NborchError(f"cannot draw to {path}: use a .svg, .png, .pdf or .dot file")
    _require_dot()
    path.write_bytes(g.pipe(format=fmt))
    return path


def _require_dot() -> None:
    if not have_dot():
        raise NborchError("Graphviz's `dot` program is not installed, so the graph cannot be drawn "
                          "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
                          "graphviz). Use a .dot file name to get the graph's source instead.")
