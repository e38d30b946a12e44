"""Text contrast of the HTML views in JupyterLab's light and dark themes (WCAG 2 ratios).

The views are rendered as the widget and the saved notebook show them; every piece of text
is paired with the colour and background it gets (its own or inherited, JupyterLab's
output text and page background where the view sets none), and the CSS variables are
resolved with the values of the installed JupyterLab's own theme files, not with the
fallbacks the templates carry. The fallbacks are checked too, on a white page, as a front
end without JupyterLab's variables shows them.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nborch.core.run import Run, TaskRun
from nborch.ui import htmlview

THEMES = Path(sys.prefix) / "share" / "jupyter" / "lab" / "themes" / "@jupyterlab"
MINIMUM = 4.5
# What JupyterLab gives an output that sets no colour of its own: the notebook's background,
# and the rendered-HTML (and widgets') text colour.
PAGE_TEXT, PAGE_BACKGROUND = "var(--jp-content-font-color1)", "var(--jp-layout-color0)"
NAMED = {"white": "#ffffff", "black": "#000000", "transparent": "rgba(0,0,0,0)"}
VOID = {"br", "hr", "img", "input", "meta", "link", "wbr"}


def theme_variables(theme: str) -> dict[str, str]:
    css = (THEMES / f"theme-{theme}-extension" / "index.css").read_text(encoding="utf-8")
    return dict(re.findall(r"(--[\w-]+)\s*:\s*([^;}]+)", css))


def resolve(value: str, variables: dict[str, str], depth: int = 0) -> str:
    """A CSS colour with its ``var(--x, fallback)`` replaced as a browser would."""
    match = re.fullmatch(r"\s*var\(\s*(--[\w-]+)\s*(?:,\s*(.+))?\)\s*", value)
    if not match:
        return value.strip()
    assert depth < 10, value
    name, fallback = match.groups()
    if name in variables:
        return resolve(variables[name], variables, depth + 1)
    assert fallback is not None, f"{name} is not defined and has no fallback"
    return resolve(fallback, variables, depth + 1)


def rgba(colour: str) -> tuple[float, float, float, float]:
    colour = NAMED.get(colour, colour)
    if colour.startswith("#"):
        digits = colour[1:]
        if len(digits) == 3:
            digits = "".join(d * 2 for d in digits)
        return (*(int(digits[i:i + 2], 16) for i in (0, 2, 4)), 1.0)
    match = re.fullmatch(r"rgba?\(([^)]*)\)", colour)
    assert match, f"not a colour this test reads: {colour!r}"
    parts = [float(p) for p in match.group(1).split(",")]
    return (*parts[:3], parts[3] if len(parts) > 3 else 1.0)


def over(top: tuple, bottom: tuple) -> tuple:
    alpha = top[3]
    return (*(alpha * t + (1 - alpha) * b for t, b in zip(top[:3], bottom[:3])), 1.0)


def luminance(rgb: tuple) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def ratio(text: str, background: str, page: str, variables: dict[str, str]) -> float:
    base = rgba(resolve(page, variables))
    back = over(rgba(resolve(background, variables)), base)
    fore = over(rgba(resolve(text, variables)), back)
    high, low = sorted((luminance(fore), luminance(back)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def style_of(attrs: dict) -> dict[str, str]:
    out = {}
    for declaration in (attrs.get("style") or "").split(";"):
        key, _, value = declaration.partition(":")
        if value:
            out[key.strip().lower()] = value.strip()
    if attrs.get("bgcolor"):
        out["background"] = attrs["bgcolor"]
    return out


class TextColours(HTMLParser):
    """Each piece of text with the colour and the background it is drawn in."""

    def __init__(self):
        super().__init__()
        self.stack = [(PAGE_TEXT, "transparent")]
        self.svg = 0
        self.pairs: dict[tuple[str, str], str] = {}  # (colour, background) -> a text in it

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.svg += 1
        if tag in VOID:
            return
        colour, background = self.stack[-1]
        style = style_of(dict(attrs))
        background = style.get("background-color", style.get("background", background))
        self.stack.append((style.get("color", colour), background))

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg -= 1
        if tag not in VOID:
            self.stack.pop()

    def handle_data(self, data):
        if data.strip() and not self.svg:  # the graph's labels are dark on the state fills
            self.pairs.setdefault(self.stack[-1], data.strip())


def views() -> str:
    """Every fragment that has text of its own: a failed task with its error, a grid, a
    link, the runs table with a selected row, the dashboard's title, a dry run."""
    run = Run(run_id="r1", pipeline="demo", status="failed", started_at="2026-11-29T10:00:00",
              ended_at="2026-11-29T10:01:00", tasks={
                  "extract": TaskRun("extract", status="success", attempts=1,
                                     started_at="2026-11-29T10:00:00",
                                     ended_at="2026-11-29T10:00:05",
                                     output_path="/srv/project/nborch-runs/r1/extract.ipynb",
                                     values={"rows": 3}),
                  "broken": TaskRun("broken", status="failed", attempts=2, error={
                      "type": "ValueError", "message": "bad data\nin row 7", "cell": 2,
                      "cell_source": "raise ValueError('bad data')",
                      "traceback": "Traceback (most recent call last)"}),
                  "later": TaskRun("later", status="upstream_failed",
                                   reason="upstream task failed"),
                  "tiny-1": TaskRun("tiny-1", status="success", grid="tiny"),
                  "tiny-2": TaskRun("tiny-2", status="failed", grid="tiny"),
              })
    rows = [{"run_id": "r1", "pipeline": "demo", "status": "failed",
             "started_at": "2026-11-29T10:00:00", "ended_at": "2026-11-29T10:01:00"},
            {"run_id": "r0", "pipeline": "demo", "status": "success",
             "started_at": "2026-11-28T10:00:00", "ended_at": "2026-11-28T10:01:00"}]
    return "".join([
        htmlview.snapshot(run, None, Path("/srv/project")),
        htmlview.summary_line(htmlview.summary_text(run)),
        htmlview.runs_table(rows, selected="r1"), htmlview.runs_table([]),
        htmlview.dashboard_title("recent runs", "/srv/project/.nborch"),
        htmlview.dry_run("pipeline 'demo' is valid", None)])


@pytest.fixture(scope="module")
def pairs() -> dict[tuple[str, str], str]:
    parser = TextColours()
    parser.feed(views())
    return parser.pairs


def test_the_views_text_is_coloured_by_the_theme(pairs):
    # The error, the links, the muted notes and a selected row are all in the views, and
    # none of their colours is a fixed one that ignores the theme.
    colours = {colour for colour, _ in pairs} | {back for _, back in pairs}
    assert len(pairs) >= 5, pairs
    assert all(c == "transparent" or c.startswith("var(--jp-") for c in colours), colours


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_text_contrast_in_jupyterlab_themes(pairs, theme):
    variables = theme_variables(theme)
    low = {(text, ratio(colour, back, PAGE_BACKGROUND, variables)): (colour, back)
           for (colour, back), text in pairs.items()}
    failing = {k: v for k, v in low.items() if k[1] < MINIMUM}
    assert not failing, failing
    # JupyterLab's dark page really is dark here: the check is not two light themes.
    assert luminance(rgba(resolve(PAGE_BACKGROUND, variables))) < 0.05 or theme == "light"


def test_fallback_colours_on_a_plain_white_page(pairs):
    no_variables: dict[str, str] = {}
    for (colour, back), text in pairs.items():
        colour = "#000000" if colour == PAGE_TEXT else colour
        assert ratio(colour, back, "#ffffff", no_variables) >= MINIMUM, (text, colour, back)
