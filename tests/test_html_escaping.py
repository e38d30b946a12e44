"""User text never becomes HTML in the run views.

Task names, published values, error messages, cell sources, tracebacks, commands, reasons,
progress lines, pipeline names and run ids hold any characters (markup, quotes, ``&``,
control characters, any unicode); every fragment of ``ui.htmlview`` and the report page are
parsed, and each element, attribute, comment or declaration in them must come from the
templates, each element closed as the templates close it, and the text read back as written.
"""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nborch.core.grouping import groups
from nborch.core.run import Run, TaskRun
from nborch.ui import htmlview, report

TEMPLATES = Path(htmlview.__file__).parent / "templates"
SOURCE = "".join(p.read_text(encoding="utf-8") for p in TEMPLATES.glob("*.html.j2"))
# Every element and attribute the templates write (and only those).
# (html.parser reads names in lower case.)
TAGS = {tag.lower() for tag in re.findall(r"</?([a-zA-Z][a-zA-Z0-9-]*)", SOURCE)}
ATTRIBUTES = {a.lower() for a in re.findall(r"(?:\s|%\})([a-zA-Z][a-zA-Z0-9:-]*)=\"", SOURCE)}
ATTRIBUTES.add("open")  # written alone
VOID = {"br", "meta", "line", "rect"}  # written without a closing tag (or self-closed)

PAYLOADS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'><x-evil a='",
            "</td></tr></table></div>", "<!-- c -->", "<!DOCTYPE x>", "&amp;", "&", "&#60;",
            "\x00", "\x1b[31m", "\r\n", "\u202e", "😀", "]]>", "{{ x }}", "<b>", "`"]
hostile = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(PAYLOADS)),
                   min_size=1, max_size=4).map("".join)

quick = settings(max_examples=120, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


class Parsed(HTMLParser):
    """Everything the parser found: start and end tags with attributes, text, and anything
    else (comments, declarations, processing instructions) that the templates never write."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, dict]] = []
        self.ends: list[str] = []
        self.text: list[str] = []
        self.other: list[str] = []
        self.feed(str(page))
        self.close()

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        self.ends.append(tag)

    def handle_endtag(self, tag):
        self.ends.append(tag)

    def handle_data(self, data):
        self.text.append(data)

    def handle_comment(self, data):
        self.other.append(f"comment {data!r}")

    def handle_decl(self, decl):
        if decl.lower() != "doctype html":  # the report's own
            self.other.append(f"declaration {decl!r}")

    def handle_pi(self, data):
        self.other.append(f"processing instruction {data!r}")

    def unknown_decl(self, data):
        self.other.append(f"declaration {data!r}")


def parse_template_html(page: str) -> Parsed:
    """Parse ``page`` and check that its markup is the templates' own."""
    parsed = Parsed(page)
    assert not parsed.other, parsed.other
    tags = {tag for tag, _ in parsed.starts} | set(parsed.ends)
    assert tags <= TAGS, tags - TAGS
    names = {name for _, attrs in parsed.starts for name in attrs}
    assert names <= ATTRIBUTES, names - ATTRIBUTES
    opened = Counter(tag for tag, _ in parsed.starts if tag not in VOID)
    closed = Counter(tag for tag in parsed.ends if tag not in VOID)
    assert opened == closed, (opened - closed, closed - opened)
    return parsed


def hostile_run(pipeline: str, run_id: str, texts: list[str]) -> Run:
    """A run in which every text a user writes or a task produces is one of ``texts``."""
    t = (texts * 8)[:8]
    error = {"type": t[0], "message": f"{t[1]}\n{t[2]}", "cell": 3, "cell_source": t[3],
             "traceback": t[4]}
    start, end = "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:09+00:00"
    tasks = [
        TaskRun(f"{t[0]}-ok", status="success", attempts=1, started_at=start, ended_at=end,
                output_path=f"/srv/project/{t[1]}/{t[2]}.ipynb", values={t[3]: t[4], "v": [t[5]]}),
        TaskRun(f"{t[1]}-run", status="running", attempts=2, started_at=start,
                progress={"cell": 2, "cells": 5, "line": t[6]}),
        TaskRun(f"{t[2]}-bad", status="failed", attempts=1, started_at=start, ended_at=end,
                error=error),
        TaskRun(f"{t[3]}-retry", status="retrying", attempts=1, error={**error, "cell": None}),
        TaskRun(f"{t[4]}-up", status="upstream_failed", reason=t[7]),
        TaskRun(f"{t[5]}-cmd", status="success", command=["echo", t[6], t[7]], started_at=start,
                ended_at=end),
        *(TaskRun(f"{t[6]}-{i}", status=s, grid=f"g{t[7]}", started_at=start, ended_at=end,
                  output_path=f"/w/{t[0]}-{i}.ipynb", values={"x": t[1]})
          for i, s in enumerate(["success", "failed", "running"])),
    ]
    return Run(run_id, pipeline, started_at=start, params={"p": t[0]},
               tasks={task.name: task for task in tasks})


@quick
@given(pipeline=hostile, run_id=hostile, texts=st.lists(hostile, min_size=1, max_size=8))
def test_no_user_text_becomes_markup_in_any_fragment(pipeline, run_id, texts):
    run = hostile_run(pipeline, run_id, texts)
    names = list(run.tasks)
    if len(set(names)) != len(names) or any(run.tasks[n].grid in run.tasks for n in names):
        return  # two tasks of the same name: not a run
    grids = groups(run)
    fragments = {
        "snapshot": htmlview.snapshot(run, None, base=Path("/srv/project")),
        "widget table": htmlview.task_table(run, expand_grids=False),
        "header": htmlview.header(run),
        "summary": htmlview.summary_line(htmlview.summary_text(run) + texts[0]),
        "errors": htmlview.errors_html(run),
        "instances": htmlview.instance_table(run, next(iter(grids.values()))),
        "runs": htmlview.runs_table([{"run_id": run_id, "pipeline": pipeline, "status": "failed",
                                      "started_at": run.started_at, "ended_at": None}],
                                    selected=run_id),
        "dashboard": htmlview.dashboard_title(texts[0], pipeline),
        "dry run": htmlview.dry_run(texts[0], None),
    }
    for where, fragment in fragments.items():
        parsed = parse_template_html(fragment)
        text = "".join(parsed.text)
        if where == "snapshot":
            # Every name reads back as written, in its row's attribute and in its text.
            rows = [a["data-task"] for tag, a in parsed.starts if "data-task" in a]
            assert rows == [n for n in names if not run.tasks[n].grid] + list(grids)[:1] + [
                n for n in names if run.tasks[n].grid], where
            assert [a["data-run"] for _, a in parsed.starts if "data-run" in a] == [run_id]
            links = [a["href"] for tag, a in parsed.starts if tag == "a"]
            assert all(not re.search(r"[\s\"'<>]", href) for href in links), links
            for error in (run.tasks[names[2]].error,):
                assert error["type"] in text and error["cell_source"] in text
                assert error["traceback"] in text
            assert pipeline in text and texts[0] + "-ok" in text
        if where == "dashboard":
            assert texts[0] in text and pipeline in text


@quick
@given(pipeline=hostile, texts=st.lists(hostile, min_size=1, max_size=8))
def test_no_user_text_becomes_markup_in_the_report(pipeline, texts):
    run = hostile_run(pipeline, "r1", texts)
    names = list(run.tasks)
    if len(set(names)) != len(names):
        return
    run.tasks[names[0]].products = {texts[0]: f"/out/{texts[-1]}"}
    attempts = [{"task": n, "attempt": 1, "status": "failed" if t.error else "success",
                 "started_at": run.started_at, "ended_at": t.ended_at, "error": t.error}
                for n, t in run.tasks.items() if t.started_at]
    with mock.patch.object(htmlview, "layout", return_value=None):  # Graphviz: names are words
        page = report.render_report(run, attempts)
    parsed = parse_template_html(page)
    text = "".join(parsed.text)
    assert pipeline in text and texts[0] in text


@quick
@given(lines=st.lists(hostile, min_size=3, max_size=3))
def test_the_graph_writes_status_lines_and_tooltips_as_text(lines):
    graph = htmlview.layout({"a": (), "b": ("a",), "c": ("a", "b")})
    if graph is None:
        return  # no Graphviz here
    states = {"a": "success", "b": "running", "c": "failed"}
    svg, plain = graph.render(states, dict(zip("abc", lines))), graph.render(states, {})
    drawn, expected = Parsed(svg), Parsed(plain)
    assert drawn.other == expected.other
    assert [(tag, sorted(attrs)) for tag, attrs in drawn.starts] == [
        (tag, sorted(attrs)) for tag, attrs in expected.starts]
    assert drawn.ends == expected.ends
    text = "".join(drawn.text)
    tips = [a["xlink:title"] for tag, a in drawn.starts if "xlink:title" in a]
    for line in lines:
        if line.strip():
            assert line in text and any(tip.endswith(f" · {line}") for tip in tips), line
