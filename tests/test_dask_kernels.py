"""Kernels on Dask workers: forked from the worker's own kernel template (nborch's worker
plugin), and warm ones for the next attempt of the same kind. Real ``dask scheduler`` and
``dask worker`` processes; which process forked which is read from the system."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from conftest import nborch, run_json, wait_until, write_notebook, write_pipeline
from dask_cluster import DaskProcesses

from nborch import Pipeline

distributed = pytest.importorskip("distributed")

# A kernel publishes its pid and its parent's, and those of its parent's parent.
ANCESTRY = ("import os, psutil, nborch\nme = psutil.Process()\n"
            "nborch.publish('kernel', me.pid)\nnborch.publish('parent', me.ppid())\n"
            "nborch.publish('grandparent', me.parent().ppid())\n"
            "nborch.publish('parent_command', ' '.join(me.parent().cmdline()))")


@pytest.fixture
def cluster(tmp_path):
    processes = DaskProcesses(tmp_path)
    processes.worker()
    yield processes
    processes.stop()


def worker_kernels(client) -> dict:
    """What nborch's plugin keeps on each worker: spares taken, spares ready now."""
    def look(dask_worker):
        kernels = dask_worker.plugins["nborch-kernels"].kernels
        return {"taken": kernels.taken, "spares": kernels.spares()}
    return client.run(look)


def test_a_kernel_on_a_worker_is_forked_from_the_workers_template(workdir: Path, cluster):
    """The kernel's parent is the kernel template, whose parent is the worker; the next run
    (another executor on the same cluster) forks from the same template: the plugin is
    registered once per cluster. `nborch run -v` says so."""
    [worker] = cluster.client.run(os.getpid).values()
    write_notebook(workdir / "where.ipynb", ANCESTRY)
    path = write_pipeline(workdir, {"name": "forked", "tasks": {
        "where": {"notebook": "where.ipynb"}}})
    templates = []
    for _ in range(2):
        proc = nborch("run", str(path), "--executor", f"dask://{cluster.address}", "--json",
                      "-v", cwd=workdir)
        assert proc.returncode == 0, proc.stderr
        seen = run_json(proc)["tasks"]["where"]["values"]
        assert seen["grandparent"] == worker
        assert "-m nborch.execution.forkserver" in seen["parent_command"]
        assert "kernels on the Dask workers: forked from a kernel template" in proc.stderr
        templates.append(seen["parent"])
    assert templates[0] == templates[1]  # one template for the worker's life
    assert psutil.Process(templates[0]).ppid() == worker


def test_the_next_attempt_of_the_same_kind_takes_the_warm_kernel(workdir: Path, cluster):
    """``first`` waits until a spare kernel is forked beside its own (the template's other
    child), then ``second`` runs on that very process, with its own attempt's variables;
    the spare the run did not use is stopped when the run ends."""
    write_notebook(workdir / "first.ipynb",
                   "import os, time, psutil, nborch\ntemplate = psutil.Process().parent()\n"
                   "deadline = time.monotonic() + 60\n"
                   "while len(template.children()) < 2 and time.monotonic() < deadline:\n"
                   "    time.sleep(0.05)\n"
                   "nborch.publish('spares', [p.pid for p in template.children() "
                   "if p.pid != os.getpid()])")
    write_notebook(workdir / "second.ipynb",
                   "import os, nborch\nnborch.publish('kernel', os.getpid())\n"
                   "nborch.publish('env', {k: os.environ[k] for k in "
                   "('NBORCH_TASK', 'NBORCH_ATTEMPT', 'NBORCH_ARTIFACT_DIR')})\n"
                   "nborch.publish('artifacts', str(nborch.artifact_path('x')))")
    p = Pipeline("warm", root=workdir)
    p.notebook("second.ipynb", upstream=[p.notebook("first.ipynb")])
    run = p.start(executor=f"dask://{cluster.address}", home=workdir / ".nborch").wait(180)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    second = run.values["second"]
    assert run.values["first"]["spares"] == [second["kernel"]]  # the kernel forked ahead
    assert second["env"]["NBORCH_TASK"] == "second" and second["env"]["NBORCH_ATTEMPT"] == "1"
    assert second["env"]["NBORCH_ARTIFACT_DIR"].endswith(f"{run.run_id}/artifacts/second")
    assert second["artifacts"].startswith(second["env"]["NBORCH_ARTIFACT_DIR"])
    [kept] = worker_kernels(cluster.client).values()
    assert kept["taken"] == 1
    wait_until(lambda: list(worker_kernels(cluster.client).values())[0]["spares"] == 0,
               "the ended run's spare kernel to be stopped", 30)


def test_a_spare_serves_only_its_own_kind(workdir: Path, cluster):
    """Tasks with another environment (here a secret of their own) never take a spare
    forked for another task's: each gets a kernel forked for it."""
    (workdir / ".env").write_text("TOKEN=warm-s3cr3t-value\n")
    for name in ("plain", "secret"):
        write_notebook(workdir / f"{name}.ipynb", "import os, nborch\n"
                       "nborch.publish('token', os.environ.get('TOKEN', '') != '')")
    path = write_pipeline(workdir, {"name": "kinds", "tasks": {
        "plain": {"notebook": "plain.ipynb"},
        "secret": {"notebook": "secret.ipynb", "upstream": ["plain"], "secrets": ["TOKEN"]}}})
    proc = nborch("run", str(path), "--executor", f"dask://{cluster.address}", "--json",
                  cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    values = {n: t["values"] for n, t in run_json(proc)["tasks"].items()}
    assert values == {"plain": {"token": False}, "secret": {"token": True}}
    [kept] = worker_kernels(cluster.client).values()
    assert kept["taken"] == 0
