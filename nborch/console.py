"""Terminal views: live run progress (rich on a terminal, plain lines otherwise) and the
tables of ``runs`` and ``show``. Views only read events or ``Run`` objects."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO

from .events import RunEnded, TaskStateChanged
from .run import Run
from .templating import format_duration

STYLE = {"success": "green", "failed": "red", "upstream_failed": "dark_orange", "running": "blue",
         "retrying": "yellow", "cancelled": "grey50", "skipped": "grey50", "queued": "cyan",
         "pending": "grey70", "crashed": "magenta"}


class PlainProgress:
    """One line per state change, for logs and pipes."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def __call__(self, event) -> None:
        line = None
        if isinstance(event, TaskStateChanged) and event.state not in ("pending", "queued"):
            line = f"{event.task}: {event.state}"
            if event.state == "running":
                line += f" (attempt {event.attempt})"
            if event.error:
                line += f" - {event.error['type']}: {_first_line(event.error['message'])}"
            elif event.reason and event.state != "success":
                line += f" - {event.reason}"
        elif isinstance(event, RunEnded):
            line = f"run {event.run_id}: {event.status}"
        if line:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self.stream.flush()


class LiveProgress:
    """A rich live view: a bar with counts per state and a line per unfinished task."""

    def __init__(self, run: Run, console=None):
        from rich.console import Console
        from rich.live import Live
        self.run = run
        self.console = console or Console(stderr=False)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._live = Live(self._render(), console=self.console, refresh_per_second=8,
                          transient=False, get_renderable=self._render)

    def __enter__(self) -> "LiveProgress":
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)

    def __call__(self, event) -> None:
        if isinstance(event, TaskStateChanged) and event.state in ("failed", "retrying") and event.error:
            self.console.print(f"[red]{event.task}[/] {event.state}: {event.error['type']}: "
                               f"{_first_line(event.error['message'])}", highlight=False)

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text
        run = self.run
        counts = run.counts()
        total = len(run.tasks)
        finished = sum(counts.get(s, 0) for s in
                       ("success", "failed", "upstream_failed", "skipped", "cancelled"))
        grid = Table.grid(padding=(0, 1))
        head = Text.assemble((f"{run.pipeline} ", "bold"), (run.run_id, "dim"))
        grid.add_row(head)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=total or 1, completed=finished, width=30),
                    Text(f"{finished}/{total}"),
                    Text("  ".join(f"{n} {s}" for s, n in counts.items()), style="dim"),
                    Text(format_duration(time.monotonic() - self.started), style="dim"))
        grid.add_row(bar)
        for t in run.tasks.values():
            if t.status in ("running", "retrying", "queued"):
                extra = ""
                if t.progress:
                    extra = f"cell {t.progress['cell']}/{t.progress['cells']} {t.progress['line']}"
                grid.add_row(Text.assemble((f"  {t.status:<9} ", STYLE.get(t.status, "")),
                                           (t.name, "bold"), (f"  {extra}"[:100], "dim")))
        return grid


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def print_runs(rows: list[dict], console) -> None:
    from rich.table import Table
    from .run import _seconds_between
    table = Table(box=None, header_style="bold")
    for col in ("run id", "pipeline", "status", "started", "duration"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["run_id"], r["pipeline"], f"[{STYLE.get(r['status'], '')}]{r['status']}[/]",
                      (r["started_at"] or "")[:19].replace("T", " "),
                      format_duration(_seconds_between(r["started_at"], r["ended_at"])))
    console.print(table)


def _short_path(path: str | None) -> str:
    import os
    if not path:
        return ""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def _short_value(value) -> str:
    import json
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_run(run: Run, console) -> None:
    from rich.table import Table
    console.print(f"[bold]{run.pipeline}[/] run [bold]{run.run_id}[/]: "
                  f"[{STYLE.get(run.status, '')}]{run.status}[/] in {format_duration(run.duration)} "
                  f"(started {(run.started_at or '')[:19].replace('T', ' ')}, logical date "
                  f"{run.logical_date})", highlight=False)
    table = Table(box=None, header_style="bold")
    for col in ("task", "status", "attempts", "duration", "output notebook"):
        table.add_column(col, overflow="fold")
    for t in run.tasks.values():
        status = f"[{STYLE.get(t.status, '')}]{t.status}[/]"
        if t.status == "running" and t.progress:
            status += f" cell {t.progress['cell']}/{t.progress['cells']}"
        table.add_row(t.name, status, str(t.attempts), format_duration(t.duration),
                      _short_path(t.output_path))
    console.print(table)
    published = [(t.name, k, v) for t in run.tasks.values() for k, v in t.values.items()]
    if published:
        console.print("[bold]published values[/]")
        for task, key, value in published:
            console.print(f"  {task}.{key} = {_short_value(value)}", highlight=False, markup=False)
    for t in run.tasks.values():
        if t.error:
            e = t.error
            cell = f" in cell {e['cell']}" if e.get("cell") is not None else ""
            console.print(f"\n[red bold]{t.name}[/] failed{cell}: [bold]{e['type']}[/]: "
                          f"{e['message']}", highlight=False)
            if e.get("cell_source"):
                console.print("  " + e["cell_source"].replace("\n", "\n  "), style="dim",
                              highlight=False, markup=False)
        elif t.reason and t.status in ("upstream_failed", "cancelled", "skipped"):
            console.print(f"[dim]{t.name}: {t.reason}[/]", highlight=False)
