"""The executor contract (``execution.executors``): what any executor must do is enough to
run a pipeline, and executors are found by name, built in or from a package's entry point."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from nborch import Pipeline
from nborch.core.errors import SpecError
from nborch.execution.executors import Executor, executor_class, get_executor
from nborch.execution.executors.local import LocalExecutor
from nborch.execution.runners import make_runner


class ThreadPerAttempt(Executor):
    """The smallest executor: only ``submit`` (no kernels ahead of need, nothing to release)."""

    def __init__(self):
        self.submitted: list[str] = []
        self.shut_down = False

    def submit(self, job, request, emit, done):
        self.submitted.append(job.task)
        runner = make_runner(job, None, emit)  # command tasks only: no kernel
        threading.Thread(target=lambda: done(runner.run()), daemon=True).start()
        return runner

    def shutdown(self) -> None:
        self.shut_down = True


def test_an_executor_with_only_submit_runs_a_pipeline(workdir: Path):
    p = Pipeline("contract", root=workdir)
    first = p.command([sys.executable, "-c", "print('one')"], name="first")
    p.command([sys.executable, "-c", "import sys; sys.exit(3)"], name="second", upstream=[first])
    executor = ThreadPerAttempt()
    run = p.run(executor=executor, home=workdir / ".nborch")
    assert executor.submitted == ["first", "second"] and executor.shut_down
    assert (run.tasks["first"].status, run.tasks["second"].status) == ("success", "failed")
    assert run.status == "failed"


def test_executors_are_found_by_name_and_unknown_names_say_which_exist():
    assert isinstance(get_executor(None), LocalExecutor)
    assert isinstance(get_executor("local"), LocalExecutor)
    own = ThreadPerAttempt()
    assert get_executor(own) is own
    with pytest.raises(SpecError, match=r"unknown executor 'k8s'; use one of local, dask"):
        get_executor("k8s://cluster")
    with pytest.raises(SpecError, match="executor must be a name"):
        get_executor(42)


def test_a_package_adds_an_executor_through_its_entry_point(tmp_path: Path, monkeypatch):
    """A real installed distribution (a dist-info folder on sys.path), as pip leaves it."""
    (tmp_path / "toy_executor.py").write_text(
        "from nborch.execution.executors import Executor\n"
        "class ToyExecutor(Executor):\n"
        "    def __init__(self, target):\n"
        "        self.target = target\n"
        "    @classmethod\n"
        "    def from_target(cls, target):\n"
        "        return cls(target)\n"
        "    def submit(self, job, request, emit, done):\n"
        "        raise NotImplementedError\n")
    info = tmp_path / "toy_executor-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-executor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[nborch.executors]\ntoy = toy_executor:ToyExecutor\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    executor = get_executor("toy://somewhere:1234")
    assert type(executor).__name__ == "ToyExecutor" and executor.target == "toy://somewhere:1234"
    assert executor_class("toy") is type(executor)
