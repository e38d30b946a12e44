"""The run widget in a real browser: JupyterLab and Notebook 7 in headless Chromium.

A real ``jupyter lab`` server on 127.0.0.1 serves controlling notebooks; Playwright drives
Debian's Chromium (never a downloaded browser): wait for the kernel, Run All Cells, read
the widget's SVG and text from the page. Set ``NBORCH_UPDATE_SCREENSHOTS=1`` to refresh
the screenshots in docs/img/ that docs/jupyter.md shows (otherwise they go to tmp).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, kernels_of, wait_until, write_notebook

from nborch import Store
from nborch.core.states import COLOURS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/lib/chromium/chromium"  # Debian's binary; /usr/bin/chromium is a slower wrapper
DOCS_IMG = REPO / "docs" / "img"
GREEN, BLUE, GREY = COLOURS["success"].fill, COLOURS["running"].fill, COLOURS["cancelled"].fill


def _missing() -> list[str]:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append("Debian's chromium (./dev test installs it with apt-get)")
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab"),
                            ("notebook", "notebook")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {package} (pip install -e '.[test]')")
    if shutil.which("dot") is None:
        missing.append("Graphviz's dot")
    return missing


@pytest.fixture(scope="module")
def tools() -> None:
    missing = _missing()
    if missing:
        why = "browser tests need " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must have them)")
        pytest.skip(why)


class JupyterServer:
    """``jupyter lab`` on a free local port with a token and its own temporary config."""

    def __init__(self, root: Path, home: Path):
        self.root, self.token = root, "nborch-test-token"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        config = home / "config"
        (config / "labconfig").mkdir(parents=True)
        (config / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        settings = home / "settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True)
        # Keep every cell in the DOM, so the test can read outputs out of view.
        (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
        env.update(JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(home / "data"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                   JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
                   JUPYTERLAB_SETTINGS_DIR=str(home / "settings"))
        self.log = open(home / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ip=127.0.0.1", f"--port={self.port}", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not start: "
                                   f"{(home / 'server.log').read_text()}")
            time.sleep(0.2)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.base}{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read() or b"null")

    def stop_kernels(self) -> None:
        """Shut down every kernel the server runs. Listing them answers 500 while a kernel
        is going away under it (seen once in CI), and one may be gone before its DELETE:
        asked again until the list is read and emptied."""
        def emptied() -> bool:
            try:
                for kernel in self.api("/api/kernels"):
                    self.api(f"/api/kernels/{kernel['id']}", method="DELETE")
            except urllib.error.HTTPError as exc:
                if exc.code not in (404, 500):
                    raise
                return False
            return True
        wait_until(emptied, "the server's kernels to stop", timeout=30)

    def _answers(self) -> bool:
        try:
            self.api("/api/status")
            return True
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"{self.base}/{path}?token={self.token}"

    def stop(self) -> None:
        try:
            self.api("/api/shutdown", method="POST")
            self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tools, tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-root")
    jupyter = JupyterServer(root, tmp_path_factory.mktemp("lab-home"))
    yield jupyter
    jupyter.stop()


@pytest.fixture(scope="module")
def browser(tools):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    yield page
    page.close()


def screenshot_path(name: str, tmp_path: Path) -> Path:
    if os.environ.get("NBORCH_UPDATE_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG / name
    return tmp_path / name


def open_and_run_all(page, server: JupyterServer, url_path: str) -> None:
    """Open a notebook, wait until its kernel really is idle, then Run → Run All Cells."""
    # JupyterLab would reopen the previous tests' notebooks from its workspace: reset it.
    page.goto(server.url(url_path) + ("&reset" if url_path.startswith("lab/") else ""))
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    # The trap: the indicator reads idle for a moment before any kernel exists, and a Run
    # sent then does nothing. Wait for the kernel's name and an idle kernel on the server.
    page.wait_for_function("""() => {
        const name = document.querySelector('.jp-Toolbar-kernelName');
        const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
        const label = name && (name.getAttribute('aria-label') || name.textContent);
        return label && !/No Kernel/.test(label) && status && status.dataset.status === 'idle';
    }""", timeout=60_000)
    # This notebook's own kernel (a previous test's page may leave one starting).
    path = url_path.removeprefix("lab/tree/").removeprefix("notebooks/")
    deadline = time.monotonic() + 60
    while True:
        sessions = [s for s in server.api("/api/sessions") if s["path"] == path]
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle":
            break
        assert time.monotonic() < deadline, sessions
        time.sleep(0.2)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


# A run's drawing: the live view while it runs, its plain final state once it has ended.
DRAWING = ".nborch-run-view, .nborch-snapshot"


def node_fills(page, view: str = DRAWING) -> dict[str, str]:
    """Each task's fill in the first run drawing's graph, read from the DOM."""
    return page.evaluate("""(view) => {
        const out = {};
        const root = document.querySelector(view);
        for (const node of root ? root.querySelectorAll('g.node') : []) {
            const shape = node.querySelector('polygon, path, ellipse');
            out[node.id] = shape && shape.getAttribute('fill');
        }
        return out;
    }""", view)


def wait_for_fills(page, predicate: str, timeout: float = 180_000) -> None:
    page.wait_for_function(f"""() => {{
        const root = document.querySelector('{DRAWING}');
        if (!root) return false;
        const fills = [...root.querySelectorAll('g.node')].map(
            n => n.querySelector('polygon, path, ellipse').getAttribute('fill'));
        return fills.length > 0 && ({predicate})(fills);
    }}""", timeout=timeout)


def test_demo_notebook_in_jupyterlab_turns_every_node_green(server, page, tmp_path):
    folder = server.root / "lab-demo"
    shutil.copytree(REPO / "notebooks", folder,
                    ignore=shutil.ignore_patterns(".nborch", ".ipynb_checkpoints"))
    open_and_run_all(page, server, "lab/tree/lab-demo/orchestrate_demo.ipynb")
    wait_for_fills(page, f"fills => fills.length === 5 && fills.every(f => f === '{GREEN}')")
    assert node_fills(page) == dict.fromkeys(
        ["generate", "clean", "by_region", "by_product", "report"], GREEN)
    # One drawing of the run: the live view became its final state (nothing to retry).
    cell = page.locator(".jp-CodeCell", has=page.locator(".nborch-snapshot")).first
    cell.wait_for(timeout=30_000)
    assert cell.locator(".nborch-snapshot").count() == 1
    assert cell.locator(".nborch-run-view").count() == 0
    text = cell.locator(".nborch-snapshot").inner_text()
    assert "5/5 tasks done · 5 success" in text and "in all" in text
    assert "orchestrate_demo run" in text  # named after the notebook, which Jupyter told the kernel
    # The rest of the notebook ran too: the values cell and the dashboard.
    page.wait_for_selector(".nborch-runs-dashboard .nborch-run-row", timeout=60_000)
    assert "total revenue" in page.locator(".jp-Notebook").inner_text()
    cell.screenshot(path=str(screenshot_path("jupyter-run.png", tmp_path)))
    page.locator(".nborch-runs-dashboard").screenshot(
        path=str(screenshot_path("jupyter-runs.png", tmp_path)))
    runs = Store(folder / ".nborch").list_runs()
    assert [(r["pipeline"], r["status"]) for r in runs] == [("orchestrate_demo", "success")]


def test_stop_button_cancels_a_background_run_in_notebook7(server, page, tmp_path):
    folder = server.root / "stop"
    write_notebook(folder / "extract.ipynb", "import nborch\nnborch.publish('rows', 3)")
    write_notebook(folder / "audit.ipynb", "pass")
    write_notebook(folder / "slow.ipynb", "import time", "x = 1", "time.sleep(120)")
    write_notebook(folder / "report.ipynb", "pass")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("%load_ext nborch"),
                nbformat.v4.new_code_cell("%%orchestrate\n"
                                          "extract.ipynb >> slow.ipynb >> report.ipynb\n"
                                          "extract.ipynb >> audit.ipynb"),
                nbformat.v4.new_code_cell("print('the kernel is free:', _nborch_run.status)")]
    nbformat.write(nb, str(folder / "control.ipynb"))
    open_and_run_all(page, server, "notebooks/stop/control.ipynb")
    # Without --wait the cell returns at once and the next one runs while the pipeline goes on.
    page.wait_for_selector("text=the kernel is free: running", timeout=120_000)
    # slow.ipynb has 3 cells; with no parameters cell, its `upstream` is injected in a 4th.
    page.wait_for_function(f"""() => {{
        const row = document.querySelector('.nborch-run-view tr[data-task="slow"]');
        return row && /cell \\d+\\/4/.test(row.textContent)
               && document.querySelectorAll(
                   '.nborch-run-view g.node path[fill="{GREEN}"]').length === 2;
    }}""", timeout=120_000)
    assert node_fills(page) == {"extract": GREEN, "audit": GREEN, "slow": BLUE,
                                "report": COLOURS["pending"].fill}
    view = page.locator(".nborch-run-view").first
    assert "2/4 tasks done" in view.inner_text() and "running" in view.inner_text()
    view.screenshot(path=str(screenshot_path("jupyter-running.png", tmp_path)))

    view.get_by_role("button", name="Stop").click()
    wait_for_fills(page, f"fills => fills.filter(f => f === '{GREY}').length === 2", 60_000)
    assert node_fills(page) == {"extract": GREEN, "audit": GREEN, "slow": GREY, "report": GREY}
    assert "cancelled" in view.inner_text()
    # A cancelled run can be resumed: the view stays, with Resume and without Stop; one
    # drawing in the cell.
    view.get_by_role("button", name="Resume").wait_for(timeout=30_000)
    view.get_by_role("button", name="Stop").wait_for(state="hidden", timeout=30_000)
    cell = page.locator(".jp-CodeCell", has=view)
    assert cell.locator(".nborch-run-view, .nborch-snapshot").count() == 1
    run = Store(folder / ".nborch").list_runs()[0]
    assert run["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while kernels_of(run["run_id"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernels_of(run["run_id"]) == []



def control_notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.mark.parametrize("front_end", ["lab/tree", "notebooks"])
def test_a_tasks_notebook_link_opens_the_executed_notebook(server, page, front_end):
    folder = server.root / f"links-{front_end.replace('/', '-')}"
    write_notebook(folder / "extract.ipynb", "print('the executed extract', 6 * 7)")
    write_notebook(folder / "broken.ipynb", "raise ValueError('broken')")
    # A failed task keeps the live view (for Retry failed): its links are the widget's.
    control_notebook(folder / "control.ipynb", "%load_ext nborch",
                     "%%orchestrate --wait\nextract.ipynb >> broken.ipynb")
    open_and_run_all(page, server, f"{front_end}/{folder.name}/control.ipynb")
    page.get_by_role("button", name="Retry failed").wait_for(timeout=120_000)
    link = page.locator('.nborch-run-view tr[data-task="extract"] a').first
    link.wait_for(timeout=120_000)
    href = urllib.parse.unquote(link.get_attribute("href"))
    assert href.startswith("nborch-runs/") and not any(p.startswith(".") for p in href.split("/"))
    # A server with the default configuration serves it (hidden paths it would refuse).
    model = server.api(f"/api/contents/{folder.name}/{urllib.parse.quote(href)}")
    assert model["type"] == "notebook"
    with page.context.expect_page(timeout=30_000) as opened:
        link.click()
    notebook = opened.value
    notebook.wait_for_selector(".jp-Notebook .jp-OutputArea-output", timeout=60_000)
    assert "the executed extract 42" in notebook.locator(".jp-Notebook").inner_text()
    notebook.close()
    server.stop_kernels()  # the opened notebook started one of its own


CONTRAST_JS = """(selector) => {
    // WCAG contrast of every piece of text in the views, as the browser computed its colours.
    const parse = (c) => {
        const m = c.match(/rgba?\\(([^)]*)\\)/);
        if (!m) return null;
        const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
        return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    };
    const over = (top, bottom) => top.slice(0, 3).map(
        (t, i) => top[3] * t + (1 - top[3]) * bottom[i]).concat([1]);
    const background = (el) => {
        const layers = [];
        for (let e = el; e; e = e.parentElement) {
            const bg = parse(getComputedStyle(e).backgroundColor);
            if (bg && bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
        }
        let out = [255, 255, 255, 1];
        for (const layer of layers.reverse()) out = over(layer, out);
        return out;
    };
    const lum = (rgb) => {
        const ch = rgb.slice(0, 3).map((v) => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
    };
    const out = [];
    for (const root of document.querySelectorAll(selector)) {
        for (const el of root.querySelectorAll('*')) {
            if (el.closest('svg') || !el.offsetParent) continue;
            const text = [...el.childNodes].filter(n => n.nodeType === 3)
                .map(n => n.textContent.trim()).join('');
            if (!text) continue;
            const back = background(el);
            const fore = over(parse(getComputedStyle(el).color), back);
            const [hi, lo] = [lum(fore), lum(back)].sort((a, b) => b - a);
            out.push({text: text.slice(0, 40), ratio: (hi + 0.05) / (lo + 0.05)});
        }
    }
    return out;
}"""


def set_theme(page, name: str, light: bool) -> None:
    page.click(".lm-MenuBar-itemLabel:text-is('Settings')")
    page.click(".lm-Menu-itemLabel:text-is('Theme')")
    page.click(f".lm-Menu-itemLabel:text-is('{name}')")
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{str(light).lower()}'",
                           timeout=30_000)
    # Lab shows its splash while the theme loads: gone before anything is measured or shot.
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30_000)


def test_grid_filter_live_dashboard_and_contrast_in_both_themes(server, page, tmp_path):
    folder = server.root / "grids"
    write_notebook(folder / "tiny.ipynb", "assert n != 2, 'n=2 is bad'", parameters="n = 0")
    write_notebook(folder / "one.ipynb", "print('one')")
    (folder / "later.yaml").write_text("name: later\ntasks:\n  one: {notebook: one.ipynb}\n")
    control_notebook(folder / "control.ipynb", "%load_ext nborch",
                     "%%orchestrate --wait\nname: gridflow\ntasks:\n"
                     "  tiny: {notebook: tiny.ipynb, grid: {n: [1, 2, 3]}}",
                     "%orchestrate runs")
    open_and_run_all(page, server, f"lab/tree/{folder.name}/control.ipynb")
    view = page.locator(".nborch-run-view").first
    view.get_by_role("button", name="Retry failed").wait_for(timeout=120_000)
    # The failed instance is labelled with its parameters in the errors...
    assert "tiny-1 (n=2) failed" in view.locator(".nborch-error").first.inner_text()
    # ...and its grid's panel, opened, lists only it with the filter on.
    view.locator(".nborch-grids").get_by_text("tiny (grid)").click()
    rows = view.locator(".nborch-grids tr[data-task]")
    rows.first.wait_for(timeout=30_000)
    assert rows.count() == 3
    view.locator(".nborch-failed-only input").check()
    page.wait_for_function("() => document.querySelectorAll("
                           "'.nborch-run-view .nborch-grids tr[data-task]').length === 1")
    assert "tiny-1 (n=2)" in rows.first.inner_text()
    # The dashboard, displayed before, lists a run the CLI starts now.
    board = page.locator(".nborch-runs-dashboard")
    board.locator(".nborch-run-row").first.wait_for(timeout=60_000)
    env = {k: v for k, v in os.environ.items() if k != "NBORCH_HOME"}
    subprocess.run([sys.executable, "-m", "nborch", "run", "later.yaml"], cwd=folder, env=env,
                   check=True, capture_output=True, timeout=120)
    later = Store(folder / ".nborch").list_runs("later")[0]["run_id"]
    board.locator(".nborch-run-row", has_text=later).wait_for(timeout=30_000)
    board.locator(".nborch-run-row", has_text=later).click()
    board.locator(f'.nborch-run-view [data-run="{later}"], .nborch-run-view :text("{later}")'
                  ).first.wait_for(timeout=30_000)
    # Every text of the views reads at 4.5:1 or better, in the light theme and the dark.
    views = ".nborch-run-view, .nborch-runs-dashboard"
    for theme, light, shot in (("JupyterLab Light", True, "jupyter-grid-light.png"),
                               ("JupyterLab Dark", False, "jupyter-grid-dark.png")):
        set_theme(page, theme, light)
        texts = page.evaluate(CONTRAST_JS, views)
        assert len(texts) > 20, texts
        low = [t for t in texts if t["ratio"] < 4.5]
        assert not low, (theme, low)
        view.screenshot(path=str(screenshot_path(shot, tmp_path)))
    set_theme(page, "JupyterLab Light", True)
    server.stop_kernels()
