"""The package's shape: import circles counted from the source (``tests/import_graph.py``).

The layer rules themselves are import-linter contracts (``[tool.importlinter]`` in
pyproject.toml, run by ``./dev test``). Those see each import once; this counts the circles
that imports inside functions close. It may only go down: when an import listed as debt
in ``ignore_imports`` is removed, lower the numbers here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "import_graph", Path(__file__).with_name("import_graph.py"))
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

MAX_CIRCLES = 1              # groups of modules that import one another
MAX_MODULES_IN_CIRCLES = 2
MAX_ELEMENTARY_CIRCLES = 1


def test_import_circles_do_not_grow():
    edges = import_graph.graph()
    groups = import_graph.circles(edges)
    assert len(groups) <= MAX_CIRCLES, groups
    assert sum(map(len, groups)) <= MAX_MODULES_IN_CIRCLES, groups
    assert import_graph.elementary_circles(edges) <= MAX_ELEMENTARY_CIRCLES


def test_the_graph_sees_imports_inside_functions():
    edges = import_graph.graph()
    assert "nborch.runtime.api" in edges["nborch.scheduling.scheduler"]  # in Scheduler._start
    assert "nborch.ui.schedule_cli" in edges["nborch.ui.cli"]       # in build_parser
    assert "nborch.core.private" in edges["nborch.inside"]
