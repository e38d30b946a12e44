"""``nborch report``: one self-contained HTML page about a run.

The page has the graph coloured by state, a timeline of every attempt (retries visible),
the task table, the published values and the errors. Everything is inline (SVG, CSS); the
page loads nothing from the network, so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import jinja2
from markupsafe import Markup

from ..core.clock import format_duration, utcnow
from ..core.grouping import grid_state, groups
from ..core.run import Run
from ..core.states import ATTEMPT_STATES, State, fill
from ..store.store import Store
from . import htmlview

CHART_WIDTH = 720   # px of the time axis
LABEL_WIDTH = 160   # px of the task names left of it
ROW = 22            # px per task

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ run.pipeline }} run {{ run.run_id }}: {{ run.status }}</title>
<style>
  body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 14px;
         color: #111827; margin: 24px auto; max-width: 1100px; padding: 0 16px; }
  h1 { font-size: 20px; margin-bottom: 4px; }
  h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }
  dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 8px 0; }
  dt { color: #6b7280; }  dd { margin: 0; }
  code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
  .muted { color: #6b7280; }
  .timeline text { font-size: 11px; fill: #374151; }
  .values td, .values th { text-align: left; padding: 3px 12px 3px 0; vertical-align: top;
                           border-bottom: 1px solid #f3f4f6; }
  .values pre { margin: 0; white-space: pre-wrap; }
</style>
</head>
<body>
<h1>{{ run.pipeline }} <span class="muted">run</span> <code>{{ run.run_id }}</code></h1>
<div>{{ badge }}</div>
<dl>
  <dt>started</dt><dd>{{ started }} UTC</dd>
  <dt>ended</dt><dd>{{ ended or "still running" }}{% if ended %} UTC{% endif %}</dd>
  <dt>duration</dt><dd>{{ duration }}</dd>
  <dt>logical date</dt><dd>{{ run.logical_date or "" }}</dd>
  <dt>tasks</dt><dd>{{ summary }}</dd>
  {% if run.params %}<dt>parameters</dt><dd><code>{{ params }}</code></dd>{% endif %}
  {% if run.source %}<dt>pipeline file</dt><dd><code>{{ run.source }}</code></dd>{% endif %}
</dl>

<h2>Graph</h2>
{{ graph }}
{{ legend }}

<h2>Timeline</h2>
{% if timeline.rows %}
<svg class="timeline" width="{{ timeline.width }}" height="{{ timeline.height }}"
     viewBox="0 0 {{ timeline.width }} {{ timeline.height }}" role="img"
     aria-label="one bar per attempt">
  {% for tick in timeline.ticks %}
  <line x1="{{ tick.x }}" x2="{{ tick.x }}" y1="0" y2="{{ timeline.axis_y }}" stroke="#e5e7eb"/>
  <text x="{{ tick.x }}" y="{{ timeline.axis_y + 14 }}" text-anchor="middle">{{ tick.label }}</text>
  {% endfor %}
  {% for row in timeline.rows %}
  <g class="task-row" data-task="{{ row.name }}">
    <text x="{{ timeline.label_width - 8 }}" y="{{ row.y + 15 }}" text-anchor="end">{{ row.name }}</text>
    {% for bar in row.bars %}
    <rect class="attempt attempt-{{ bar.status }}" data-task="{{ row.name }}"
          data-attempt="{{ bar.attempt }}" x="{{ bar.x }}" y="{{ row.y + 3 }}"
          width="{{ bar.width }}" height="16" rx="3" fill="{{ bar.color }}"
          stroke="#6b7280" stroke-width="0.5"><title>{{ bar.title }}</title></rect>
    {% if bar.width > 24 %}<text x="{{ bar.x + 4 }}" y="{{ row.y + 15 }}">#{{ bar.attempt }}</text>{% endif %}
    {% endfor %}
    {% if not row.bars %}<text x="{{ timeline.label_width + 4 }}" y="{{ row.y + 15 }}"
      class="muted">{{ row.reason or row.status }}</text>{% endif %}
  </g>
  {% endfor %}
</svg>
<div>{% for status, color in attempt_colors.items() %}<span style="margin-right:12px">
  <span style="display:inline-block;width:10px;height:10px;background:{{ color }};border:1px solid #6b7280;border-radius:2px"></span>
  attempt {{ status }}</span>{% endfor %}</div>
{% else %}
<p class="muted">No attempt has started.</p>
{% endif %}

<h2>Tasks</h2>
{{ table }}

{% if products %}
<h2>Products</h2>
<table class="values"><thead><tr><th>task</th><th>name</th><th>path</th></tr></thead><tbody>
{% for task, name, path in products %}
<tr><td><b>{{ task }}</b></td><td><code>{{ name }}</code></td><td><code>{{ path }}</code></td></tr>
{% endfor %}
</tbody></table>
{% endif %}

<h2>Published values</h2>
{% if values %}
<table class="values"><thead><tr><th>task</th><th>name</th><th>value</th></tr></thead><tbody>
{% for task, name, value in values %}
<tr><td><b>{{ task }}</b></td><td><code>{{ name }}</code></td><td><pre>{{ value }}</pre></td></tr>
{% endfor %}
</tbody></table>
{% else %}
<p class="muted">No task published a value.</p>
{% endif %}

<h2>Errors</h2>
{% if errors %}{% for error in errors %}{{ error }}{% endfor %}
{% else %}<p class="muted">No attempt failed.</p>{% endif %}

<p class="muted" style="margin-top:32px">Written by nborch {{ version }} at {{ written }} UTC.</p>
</body>
</html>
"""


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
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(TEMPLATE)
    safe = Markup
    return page.render(
        run=run, badge=safe(htmlview.state_badge(run.status)),
        started=htmlview.short_time(run.started_at), ended=htmlview.short_time(run.ended_at),
        duration=format_duration(run.duration), summary=htmlview.summary_text(run),
        params=json.dumps(run.params, ensure_ascii=False),
        graph=safe(htmlview.graph_block(svg)), legend=safe(htmlview.legend()),
        timeline=timeline(run, attempts), attempt_colors={s: fill(s) for s in ATTEMPT_STATES},
        table=safe(htmlview.task_table(run, base, max_height=None)), values=values,
        products=products,
        errors=[safe(e) for e in errors], version=__version__,
        written=htmlview.short_time(utcnow()))


def write_report(store: Store, run_id: str, path: str | Path) -> Path:
    """Write the report of run ``run_id`` to ``path``; links are relative to its folder."""
    path = Path(path)
    run = store.get_run(run_id)
    page = render_report(run, store.attempts(run_id), base=path.resolve().parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
