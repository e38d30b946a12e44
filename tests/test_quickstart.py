"""What `nborch run` does first so that its first task starts sooner (nborch/ui/quickstart.py):
the kernel template started before the pipeline is loaded, and stopped when nothing needs
it; rfc3987_syntax's import deferred until something uses it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import nborch, write_notebook, write_pipeline

PY = sys.executable


@pytest.mark.skipif(importlib.util.find_spec("rfc3987_syntax") is None,
                    reason="rfc3987_syntax is not installed")
def test_rfc3987_syntax_is_imported_only_when_used():
    code = ("import sys\n"
            "from nborch.ui.quickstart import defer_rfc3987_syntax\n"
            "defer_rfc3987_syntax()\n"
            "import nbformat, jsonschema\n"
            "print('rfc3987_syntax.syntax_helpers' in sys.modules)\n"
            "checker = jsonschema.FormatChecker()\n"
            "print(checker.conforms('http://example.com/ä', 'iri'),\n"
            "      checker.conforms('not an iri', 'iri'))\n"
            "print('rfc3987_syntax.syntax_helpers' in sys.modules)\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "False", "True"]


def templates_left(tmp: Path) -> list[str]:
    return [p.name for p in tmp.iterdir() if p.name.startswith("nborch-fork-")]


def test_a_pipeline_that_fails_its_checks_leaves_no_template(workdir: Path):
    tmp = workdir / "tmp"
    tmp.mkdir()
    write_pipeline(workdir, {"name": "bad", "tasks": {"a": {"notebook": "missing.ipynb"}}})
    proc = nborch("run", "pipeline.yaml", cwd=workdir, env={"TMPDIR": str(tmp)})
    assert proc.returncode == 2 and "notebook not found" in proc.stderr
    assert templates_left(tmp) == []


def test_commands_only_need_no_template_and_notebooks_get_one(workdir: Path):
    tmp = workdir / "tmp"
    tmp.mkdir()
    check = ("import os, sys\n"  # fails while a template's folder is there
             "sys.exit(any(n.startswith('nborch-fork-')"
             " for n in os.listdir(os.environ['TMPDIR'])))")
    write_pipeline(workdir, {"name": "cmd", "tasks": {"a": {"command": [PY, "-c", check]}}})
    proc = nborch("run", "pipeline.yaml", "-v", cwd=workdir, env={"TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kernels" not in proc.stderr and templates_left(tmp) == []

    write_notebook(workdir / "nb.ipynb", "import os, nborch\nnborch.publish('ppid', os.getppid())")
    write_pipeline(workdir, {"name": "nb", "tasks": {"nb": {"notebook": "nb.ipynb"}}})
    proc = nborch("run", "pipeline.yaml", "-v", "--json", cwd=workdir, env={"TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    assert "nborch: kernels 'python3': forked from a kernel template" in proc.stderr
    assert templates_left(tmp) == []
