"""``nborch report``: one self-contained HTML page per run."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import nborch, write_notebook

from nborch import Pipeline, Store
from nborch.core.states import COLOURS
from nborch.ui.report import write_report


class Page(HTMLParser):
    """Collects the elements of a page: (tag, attributes) in document order, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.elements if t == tag and
                all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, str]:
    """A run with a task that fails once then succeeds, one that fails, and one after both."""
    folder = tmp_path_factory.mktemp("report")
    counter = folder / "count.txt"
    write_notebook(folder / "flaky.ipynb",
                   f"from pathlib import Path\np = Path({str(counter)!r})\n"
                   "n = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\n"
                   "if n < 2:\n    raise RuntimeError(f'flaky failure {n}')\n"
                   "import nborch\nnborch.publish('attempt', n)\n"
                   "nborch.publish('table', {'a': [1, 2]})")
    write_notebook(folder / "broken.ipynb", "x = 1", "raise ValueError('bad <data> in row 7')")
    write_notebook(folder / "after.ipynb", "pass")
    p = Pipeline("reported", root=folder, retries=1, retry_delay="0.3s")
    flaky = p.notebook("flaky.ipynb")
    broken = p.notebook("broken.ipynb", retries=0)
    p.notebook("after.ipynb", upstream=[flaky, broken])
    run = p.run(home=folder / ".nborch")
    assert {n: t.status for n, t in run.tasks.items()} == {
        "flaky": "success", "broken": "failed", "after": "upstream_failed"}
    return folder, run.run_id


def test_report_has_graph_timeline_table_values_and_errors(finished_run):
    folder, run_id = finished_run
    store = Store(folder / ".nborch")
    path = write_report(store, run_id, folder / "out" / "run.html")
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    # The graph: inline SVG, a node per task (id = task name) filled by its state.
    nodes = {a["id"] for a in page.find("g", class_="node")}
    assert nodes == {"flaky", "broken", "after"}
    fills = dict(re.findall(r'<g id="([^"]+)" class="node">.*?fill="([^"]+)"', text, re.S))
    assert fills == {"flaky": COLOURS["success"].fill, "broken": COLOURS["failed"].fill,
                     "after": COLOURS["upstream_failed"].fill}
    # The timeline: one bar per attempt, coloured by its outcome; the retry is visible.
    attempts = store.attempts(run_id)
    bars = page.find("rect")
    bars = [b for b in bars if "attempt" in b.get("class", "").split()]
    assert len(bars) == len(attempts) == 3
    assert sorted((b["data-task"], b["data-attempt"], b["fill"]) for b in bars) == [
        ("broken", "1", COLOURS["failed"].fill), ("flaky", "1", COLOURS["failed"].fill),
        ("flaky", "2", COLOURS["success"].fill)]
    first, second = sorted((b for b in bars if b["data-task"] == "flaky"),
                           key=lambda b: b["data-attempt"])
    assert float(second["x"]) >= float(first["x"]) + float(first["width"])  # after the delay
    # The task table, published values, errors (type, message, cell, traceback folded).
    words = " ".join(page.text)
    assert ([a["data-task"] for a in page.find("tr") if "data-task" in a]
            == ["flaky", "broken", "after"])
    assert "upstream_failed" in words and '"a": [' in words and "attempt" in words
    assert "bad <data> in row 7" in words and "bad &lt;data&gt; in row 7" in text
    assert "ValueError" in words and "RuntimeError" in words and "flaky failure 1" in words
    assert "in cell 2" in words and "raise ValueError" in words
    assert len(page.find("details")) == 2
    assert [a["class"] for a in page.find("pre") if "nborch-traceback" in a.get("class", "")]
    # Links to the executed notebooks are relative to the report.
    links = [a.get("href") for a in page.find("a")]
    assert f"../.nborch/runs/{run_id}/flaky.ipynb" in links
    # Self-contained: nothing is loaded from anywhere.
    assert all("src" not in attrs for _, attrs in page.elements)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "@import" not in text and "url(" not in text
    assert not page.find("link") and not page.find("img")


def test_report_command_writes_the_file(finished_run):
    folder, run_id = finished_run
    proc = nborch("report", "latest", cwd=folder, env={"NBORCH_HOME": str(folder / ".nborch")})
    assert proc.returncode == 0, proc.stderr
    default = folder / f"run-{run_id}.html"
    assert default.is_file() and str(default.name) in proc.stdout
    proc = nborch("report", run_id, "-o", "sub/r.html", cwd=folder,
                  env={"NBORCH_HOME": str(folder / ".nborch")})
    assert proc.returncode == 0, proc.stderr
    assert "reported" in (folder / "sub" / "r.html").read_text(encoding="utf-8")
    proc = nborch("report", "no-such-run", cwd=folder, env={"NBORCH_HOME": str(folder / ".nborch")})
    assert proc.returncode == 2 and "no run 'no-such-run'" in proc.stderr


def test_timeline_of_a_running_run_draws_open_attempts(finished_run):
    from nborch.ui.report import timeline
    folder, run_id = finished_run
    store = Store(folder / ".nborch")
    run = store.get_run(run_id)
    run.ended_at = None
    attempts = [{**a, "ended_at": None, "status": "running"} if a["task"] == "broken" else a
                for a in store.attempts(run_id)]
    chart = timeline(run, attempts, now=max(a["ended_at"] or a["started_at"] for a in
                                            store.attempts(run_id)))
    rows = {r["name"]: r for r in chart["rows"]}
    assert [b["status"] for b in rows["broken"]["bars"]] == ["running"]
    assert rows["after"]["bars"] == [] and rows["after"]["status"] == "upstream_failed"
    assert len(chart["ticks"]) == 6 and chart["ticks"][0]["label"] == "0.0s"


def test_a_grid_is_one_node_one_timeline_row_and_a_folded_table(tmp_path: Path):
    from nborch.ui.report import render_report, timeline
    write_notebook(tmp_path / "region.ipynb", "import nborch\nnborch.publish('r', region)",
                   parameters="region = 'eu'")
    write_notebook(tmp_path / "join.ipynb", "pass")
    p = Pipeline("gridded", root=tmp_path)
    regions = p.notebook("region.ipynb", name="by_region", grid={"region": ["eu", "us", "apac"]})
    p.notebook("join.ipynb", upstream=[regions])
    run = p.run(home=tmp_path / ".nborch")
    assert run.status == "success"
    attempts = Store(tmp_path / ".nborch").attempts(run.run_id)
    chart = timeline(run, attempts)
    assert [r["name"] for r in chart["rows"]] == ["by_region", "join"]
    assert sorted(b["title"].split()[0] for b in chart["rows"][0]["bars"]) == [
        "by_region-0", "by_region-1", "by_region-2"]
    page = render_report(run, attempts)
    nodes = re.findall(r'<g id="([^"]+)" class="node">', page)
    assert nodes == ["by_region", "join"]
    assert "3/3 done" in page and page.count("<details><summary>3 instances of by_region") == 1
