"""``nborch report``: one self-contained HTML page about a run.

The page has the graph coloured by state, a timeline of every attempt (retries visible),
the task table, the published values and the errors. Everything is inline (SVG, CSS); the
page loads nothing from the network, so it can be mailed, archived or opened offline. The
page is ``templates/report.html.j2``, rendered in the views' one Jinja2 environment
(``htmlview.TEMPLATES``, autoescape on) with the fragments ``htmlview`` renders.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from ..core import triggers
from ..core.clock import format_duration, utcnow
from ..core.grouping import grid_state, groups
from ..core.run import Run
from ..core.states import ATTEMPT_STATES, State, fill
from ..store.store import Store
from . import htmlview

CHART_WIDTH = 720   # px of the time axis
LABEL_WIDTH = 160   # px of the task names left of it
ROW = 22            # px per task


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def timeline(run: Run, attempts: list[dict], now: str | None = None) -> dict:
    """Bars and ticks of the Gantt chart: one row per task, one bar per attempt; a grid is
    one row holding the bars of all its instances (named in each bar's tooltip)."""
    now = now or utcnow()
    start = run.started_at or min((a["started_at"] for a in attempts), default=now)
    end = run.ended_at or now
    ends = [a["ended_at"] or end for a in attempts]
    if ends:
        end = max([end, *ends])
    span = max(_seconds(start, end), 0.001)
    scale = CHART_WIDTH / span
    by_task: dict[str, list[dict]] = {}
    for a in attempts:
        by_task.setdefault(a["task"], []).append(a)
    grids = groups(run)
    lines = []  # (row name, its tasks, its state, why it did not run)
    for name, task in run.tasks.items():
        if not task.grid:
            lines.append((name, [name], task.status, task.reason))
        elif grids[task.grid][0] == name:
            members = grids[task.grid]
            lines.append((task.grid, members,
                          grid_state([run.tasks[m].status for m in members]), None))
    rows = []
    for i, (row_name, members, status_of_row, reason) in enumerate(lines):
        bars = []
        for a in sorted((a for m in members for a in by_task.get(m, [])),
                        key=lambda a: (a["started_at"], a["attempt"])):
            name = a["task"]
            a_end = a["ended_at"] or end
            x0 = max(0.0, _seconds(start, a["started_at"])) * scale
            width = max(2.0, _seconds(a["started_at"], a_end) * scale)
            status = a["status"]
            bars.append({"attempt": a["attempt"], "status": status,
                         "x": round(LABEL_WIDTH + x0, 1), "width": round(width, 1),
                         "color": fill(status, default=fill(State.PENDING)),
                         "title": f"{name} attempt {a['attempt']}: {status}, "
                                  f"{format_duration(_seconds(a['started_at'], a_end))}"
                                  + (f" ({a['error']['type']})" if a.get("error") else "")})
        rows.append({"name": row_name, "y": i * ROW, "bars": bars, "status": status_of_row,
                     "reason": reason})
    axis_y = len(rows) * ROW + 2
    ticks = [{"x": round(LABEL_WIDTH + CHART_WIDTH * k / 5, 1),
              "label": format_duration(span * k / 5)} for k in range(6)]
    return {"rows": rows, "ticks": ticks, "axis_y": axis_y, "height": axis_y + 20,
            "width": LABEL_WIDTH + CHART_WIDTH + 30, "label_width": LABEL_WIDTH}


def render_report(run: Run, attempts: list[dict], base: Path | None = None) -> str:
    """The report page for ``run`` and its ``attempts`` (``Store.attempts``)."""
    from ..core.version import __version__
    graph = htmlview.layout(htmlview.run_edges(run))
    svg = graph.draw(run) if graph else None
    errors = [htmlview.error_details(a["task"], a["error"], label=f"attempt {a['attempt']} " + (
                  "was cancelled" if a["status"] == State.CANCELLED else "failed"))
              for a in sorted(attempts, key=lambda a: (list(run.tasks).index(a["task"])
                                                       if a["task"] in run.tasks else 0,
                                                       a["attempt"]))
              if a.get("error")]
    values = [(t.name, key, json.dumps(value, indent=2, ensure_ascii=False))
              for t in run.tasks.values() for key, value in t.values.items()]
    products = [(t.name, key, path) for t in run.tasks.values()
                for key, path in t.products.items()]
    return htmlview.TEMPLATES.get_template("report.html.j2").render(
        run=run, badge=htmlview.state_badge(run.status),
        started=htmlview.short_time(run.started_at), ended=htmlview.short_time(run.ended_at),
        trigger=triggers.shown(run.trigger),
        duration=format_duration(run.duration), summary=htmlview.summary_text(run),
        params=json.dumps(run.params, ensure_ascii=False),
        graph=htmlview.graph_block(svg), legend=htmlview.legend(),
        timeline=timeline(run, attempts), attempt_colors={s: fill(s) for s in ATTEMPT_STATES},
        table=htmlview.task_table(run, base, max_height=None), values=values,
        products=products, errors=errors, version=__version__,
        written=htmlview.short_time(utcnow()))


def write_report(store: Store, run_id: str, path: str | Path) -> Path:
    """Write the report of run ``run_id`` to ``path``; links are relative to its folder."""
    path = Path(path)
    run = store.get_run(run_id)
    page = render_report(run, store.attempts(run_id), base=path.resolve().parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
