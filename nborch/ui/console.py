"""Terminal views: live run progress (rich on a terminal, plain lines otherwise) and the
tables of ``runs`` and ``show``. Views only read events or ``Run`` objects.

Text from pipelines, notebooks and the store (names, errors, values, paths) goes through
``printable`` before it reaches the terminal, and through ``markup`` where rich reads markup.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO

from ..core import triggers
from ..core.clock import format_duration
from ..core.events import RunEnded, RunStarted, TaskStateChanged
from ..core.grouping import counted_summary, grid_state, groups, summary
from ..core.run import Run, _seconds_between
from ..core.states import (
    ACTIVE,
    FINAL,
    LAST_ATTEMPT_FAILED,
    REASON_SHOWN,
    UNSTARTED,
    State,
    terminal_style,
)
from .rungraph import running_cell

# C0 controls but tab and newline, DEL, C1 controls; in one-line text tab and newline too.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MARKUP = re.compile(r"(\\*)(\[(?:[a-z#/@][^[]*?\])?|\Z)")  # rich's tags, a bracket, the end


def printable(text: object, multiline: bool = True) -> str:
    """``text`` safe to print: each control character is shown as ``\\x1b`` and the like, so
    no escape sequence in a task name or an error sets the window title, writes the clipboard
    (OSC 52) or moves the cursor. Multi-line text keeps its newlines and tabs."""
    pattern = _CONTROLS if multiline else _CONTROLS_ONE_LINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def markup(text: object, multiline: bool = True) -> str:
    """``printable`` text for a rich markup string: ``[bold]`` or ``[link=...]`` in it is
    shown, not applied, and every backslash stays. (``rich.markup.escape`` leaves a bracket
    that opens no tag alone, yet rich reads backslash-bracket as a bracket: ``\\[`` lost its
    backslash.)"""
    def escaped(match: re.Match) -> str:
        slashes, rest = match.groups()
        if rest == "[":  # opens no tag: rich reads backslash-bracket as a bracket
            return slashes + "\\["
        return slashes * 2 + ("\\" + rest if rest else "")  # a tag, or the end: a tag follows
    return _MARKUP.sub(escaped, printable(text, multiline))


def styled(state: str) -> str:
    """``state`` as rich markup, in its colour."""
    return f"[{terminal_style(state)}]{state}[/]"


class PlainProgress:
    """One line per state change, for logs and pipes. A grid's instances are one line per
    grid (``by_region: 37/100 done, 2 failed``) when they start, every ``every`` seconds
    while they change, and when they end; only a failing or retrying instance has its own
    line, with its error."""

    def __init__(self, stream: IO[str] | None = None, every: float = 5.0):
        self.stream = stream or sys.stdout
        self.every = every
        self._grid_of: dict[str, str] = {}             # instance -> grid
        self._states: dict[str, str] = {}              # instance -> state
        self._counts: dict[str, Counter] = {}          # grid -> {state: instances in it}
        self._said: dict[str, tuple[float, str]] = {}  # grid -> (when, summary) last written
        self._labels: dict[str, str] = {}              # instance -> name with its parameters

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            self._follow_grids(event)
        elif isinstance(event, TaskStateChanged) and event.task in self._grid_of:
            self._grid_changed(event)
        elif isinstance(event, TaskStateChanged) and (event.state not in UNSTARTED
                                                      or event.reason):
            self._write(_task_line(event))
        elif isinstance(event, RunEnded):
            self._write(f"run {event.run_id}: {event.status}")

    def _follow_grids(self, event: RunStarted) -> None:
        for name, task in event.tasks.items():
            if task.get("grid"):
                self._grid_of[name] = task["grid"]
                self._labels[name] = labelled(name, task.get("own_values"))
                kept = event.resumes and name not in event.rerun  # kept by a resume: done
                self._states[name] = State.SUCCESS if kept else State.PENDING
                self._counts.setdefault(task["grid"], Counter())[self._states[name]] += 1

    def _grid_changed(self, event: TaskStateChanged) -> None:
        grid, counts = self._grid_of[event.task], self._counts[self._grid_of[event.task]]
        counts[self._states[event.task]] -= 1
        counts[event.state] += 1
        self._states[event.task] = event.state
        if event.state in LAST_ATTEMPT_FAILED:
            self._write(_task_line(event, self._labels[event.task]))
        last = self._said.get(grid)
        if last is None and event.state in UNSTARTED:
            return
        text, now = counted_summary(counts), time.monotonic()
        ended = sum(n for s, n in counts.items() if s in FINAL) == counts.total()
        if last is None or (text != last[1] and (ended or now - last[0] >= self.every)):
            self._said[grid] = (now, text)
            self._write(f"{grid}: {text}")

    def _write(self, line: str) -> None:
        self.stream.write(f"{time.strftime('%H:%M:%S')} {printable(line, multiline=False)}\n")
        self.stream.flush()


def _task_line(event: TaskStateChanged, label: str | None = None) -> str:
    line = f"{label or event.task}: {event.state}"
    if event.state == State.RUNNING:
        line += f" (attempt {event.attempt})"
    if event.error:
        line += f" - {event.error['type']}: {_first_line(event.error['message'])}"
    elif event.reason and event.state != State.SUCCESS:
        line += f" - {event.reason}"
    return line


class LiveProgress:
    """A rich live view: a bar with counts per state and a line per unfinished task."""

    def __init__(self, run: Run, console=None):
        from rich.console import Console
        from rich.live import Live
        self.run = run
        self.console = console or Console(stderr=False, emoji=False)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._live = Live(self._render(), console=self.console, refresh_per_second=8,
                          transient=False, get_renderable=self._render)

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)

    def __call__(self, event) -> None:
        if isinstance(event, TaskStateChanged) and event.state in LAST_ATTEMPT_FAILED \
                and event.error:
            self.console.print(f"[red]{markup(event.task, False)}[/] {event.state}: "
                               f"{markup(event.error['type'], False)}: "
                               f"{markup(_first_line(event.error['message']), False)}",
                               highlight=False)

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text
        run = self.run
        counts = run.counts()
        total = len(run.tasks)
        finished = sum(n for s, n in counts.items() if s in FINAL)
        grid = Table.grid(padding=(0, 1))
        head = Text.assemble((f"{printable(run.pipeline, False)} ", "bold"), (run.run_id, "dim"))
        grid.add_row(head)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=total or 1, completed=finished, width=30),
                    Text(f"{finished}/{total}"),
                    Text("  ".join(f"{n} {s}" for s, n in counts.items()), style="dim"),
                    Text(format_duration(time.monotonic() - self.started), style="dim"))
        grid.add_row(bar)
        grids = groups(run)
        in_grid = {n for names in grids.values() for n in names}
        for name, names in grids.items():  # one line per grid that is under way
            states = [run.tasks[n].status for n in names]
            active = grid_state(states)
            if active in ACTIVE:
                grid.add_row(Text.assemble((f"  {active:<9} ", terminal_style(active)),
                                           (printable(name, False), "bold"),
                                           (f"  {summary(states)}", "dim")))
        for t in run.tasks.values():
            if t.status in ACTIVE and t.name not in in_grid:
                extra = ""
                if t.progress:
                    extra = f"{running_cell(t.progress)} {t.progress['line']}"
                elif t.status in REASON_SHOWN and t.reason:
                    extra = t.reason
                grid.add_row(Text.assemble((f"  {t.status:<9} ", terminal_style(t.status)),
                                           (printable(t.name, False), "bold"),
                                           (printable(f"  {extra}"[:100], False), "dim")))
        return grid


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def print_runs(rows: list[dict], console) -> None:
    from rich.table import Table
    table = Table(box=None, header_style="bold")
    for col in ("run id", "pipeline", "status", "trigger", "started", "duration"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["run_id"], markup(r["pipeline"], False),
                      styled(r["status"]), triggers.shown(r.get("trigger")),
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


def _short_command(argv: list[str]) -> str:
    import shlex
    text = "$ " + shlex.join(argv)
    return text if len(text) <= 60 else text[:57] + "..."


def _short_value(value) -> str:
    import json
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


SHOWN_PER_GRID = 5  # instances of a grid whose values and errors ``show`` prints


def print_run(run: Run, console) -> None:
    """The text of ``nborch show``: a grid is one row under its name, and only the values
    and errors of its first few instances are printed (all are in ``show --json``)."""
    from rich.table import Table
    console.print(f"[bold]{markup(run.pipeline, False)}[/] run [bold]{run.run_id}[/]: "
                  f"{styled(run.status)} in {format_duration(run.duration)} "
                  f"(started {(run.started_at or '')[:19].replace('T', ' ')}, trigger "
                  f"{triggers.shown(run.trigger)}, logical date "
                  f"{markup(run.logical_date, False)})", highlight=False)
    if run.error:  # the run's own error: it could not start, or could not be recorded
        console.print(f"[red bold]{markup(run.error['type'], False)}[/]: "
                      f"{markup(run.error['message'])}", highlight=False)
    grids = groups(run)
    grid_of = {n: g for g, names in grids.items() for n in names}
    table = Table(box=None, header_style="bold")
    for col in ("task", "status", "attempts", "duration", "output notebook or command"):
        table.add_column(col, overflow="fold")
    for t in run.tasks.values():
        name = grid_of.get(t.name)
        if name is not None:
            if t.name == grids[name][0]:
                table.add_row(*_grid_row(name, [run.tasks[n] for n in grids[name]]))
            continue
        status = styled(t.status)
        if t.status == State.RUNNING and t.progress:
            status += f" {running_cell(t.progress)}"
        table.add_row(markup(t.name, False), status, str(t.attempts), format_duration(t.duration),
                      markup(_short_path(t.output_path) if t.command is None
                             else _short_command(t.command), False))
    console.print(table)
    shown = _first_per_grid(run.tasks.values(), grid_of, lambda t: bool(t.products))
    products = [(t.name, k, v) for t in shown for k, v in t.products.items()]
    if products:
        console.print("[bold]products[/]")
        for task, key, path in products:
            missing = "" if "://" in path or Path(path).exists() else "  (missing)"
            console.print(printable(f"  {task}.{key} = {_short_path(path)}{missing}", False),
                          highlight=False, markup=False)
    _more(console, run, grids, lambda t: bool(t.products), "products")
    shown = _first_per_grid(run.tasks.values(), grid_of, lambda t: bool(t.values))
    published = [(t.name, k, v) for t in shown for k, v in t.values.items()]
    if published:
        console.print("[bold]published values[/]")
        for task, key, value in published:
            console.print(printable(f"  {task}.{key} = {_short_value(value)}", False),
                          highlight=False, markup=False)
    _more(console, run, grids, lambda t: bool(t.values), "published values")
    for t in _first_per_grid(run.tasks.values(), grid_of, lambda t: bool(t.error)):
        e = t.error
        cell = f" in cell {e['cell']}" if e.get("cell") is not None else ""
        who = markup(labelled(t.name, t.own_values), False)
        console.print(f"\n[red bold]{who}[/] failed{cell}: "
                      f"[bold]{markup(e['type'], False)}[/]: {markup(e['message'])}",
                      highlight=False)
        if e.get("cell_source"):
            console.print("  " + printable(e["cell_source"]).replace("\n", "\n  "), style="dim",
                          highlight=False, markup=False)
    _more(console, run, grids, lambda t: bool(t.error), "errors")
    reasons: dict[tuple[str, str], int] = {}  # a grid's instances share their reasons
    for t in run.tasks.values():
        if not t.error and t.reason and t.status in REASON_SHOWN:
            key = (grid_of.get(t.name, t.name), t.reason)
            reasons[key] = reasons.get(key, 0) + 1
    for (name, reason), count in reasons.items():
        many = f" ({count} instances)" if name in grids else ""
        console.print(f"[dim]{markup(name, False)}{many}: {markup(reason)}[/]", highlight=False)


def labelled(name: str, own_values: dict | None) -> str:
    """A task's name, a grid instance's with its own parameters: ``tiny-197 (n=197)``."""
    if not own_values:
        return name
    shown = (v if isinstance(v, str) else _short_value(v) for v in own_values.values())
    return f"{name} ({', '.join(f'{k}={v}' for k, v in zip(own_values, shown))})"


def _grid_row(name: str, tasks: list) -> tuple[str, ...]:
    """A grid's row in ``show``: its counts per state, total attempts, overall span."""
    states = [t.status for t in tasks]
    starts = [t.started_at for t in tasks if t.started_at]
    ends = [t.ended_at for t in tasks if t.ended_at]
    ended = all(s in FINAL for s in states)
    duration = _seconds_between(min(starts), max(ends) if ended and ends else None) \
        if starts else None
    outputs = [t.output_path for t in tasks if t.output_path]
    pattern = os.path.commonprefix([t.name for t in tasks]).rstrip("0123456789") + "*.ipynb"
    where = _short_path(str(Path(outputs[0]).parent / pattern)) if outputs else ""
    return (f"{markup(name, False)} (grid)",
            f"[{terminal_style(grid_state(states))}]{summary(states)}[/]",
            str(sum(t.attempts for t in tasks)), format_duration(duration), markup(where, False))


def _first_per_grid(tasks, grid_of: dict, wanted) -> list:
    """The tasks for which ``wanted`` holds, at most SHOWN_PER_GRID of each grid."""
    seen: dict[str, int] = {}
    out = []
    for t in tasks:
        if not wanted(t):
            continue
        grid = grid_of.get(t.name)
        if grid is not None:
            seen[grid] = seen.get(grid, 0) + 1
            if seen[grid] > SHOWN_PER_GRID:
                continue
        out.append(t)
    return out


def _more(console, run: Run, grids: dict, wanted, what: str) -> None:
    """Say how many instances of each grid had ``what`` not printed."""
    for name, names in grids.items():
        hidden = sum(1 for n in names if wanted(run.tasks[n])) - SHOWN_PER_GRID
        if hidden > 0:
            console.print(f"[dim]  ... and {what} of {hidden} more instances of "
                          f"{markup(name, False)} (nborch show {run.run_id} --json)[/]",
                          highlight=False)
