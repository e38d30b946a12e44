"""The package's shape: import circles counted from the source (``tests/import_graph.py``).

The layer rules themselves are import-linter contracts (``[tool.importlinter]`` in
pyproject.toml, run by ``./dev test``). Those see each import once; this counts the circles
that imports inside functions close: there are none, and none may come back.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "import_graph", Path(__file__).with_name("import_graph.py"))
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


def test_no_import_circle():
    edges = import_graph.graph()
    assert import_graph.circles(edges) == []
    assert import_graph.elementary_circles(edges) == 0


def test_the_graph_sees_imports_inside_functions():
    edges = import_graph.graph()
    assert "nborch.runtime.api" in edges["nborch.scheduling.scheduler"]  # in Scheduler._start
    assert "nborch.ui.schedule_cli" in edges["nborch.ui.cli"]       # in build_parser
    assert "nborch.core.private" in edges["nborch.inside"]
