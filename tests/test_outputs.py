"""--output-dir: executed notebooks in a folder of the user's choice or behind an fsspec URL."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import nbformat
from conftest import nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline, Store
from nborch.execution.attempt import AttemptJob, AttemptResult
from nborch.execution.offhome import run_off_home


def flaky_pipeline(folder: Path) -> Pipeline:
    counter = folder / "tries"
    write_notebook(folder / "flaky.ipynb",
                   f"import os, nborch\np = {str(counter)!r}\n"
                   "n = int(open(p).read()) if os.path.exists(p) else 0\n"
                   "open(p, 'w').write(str(n + 1))\nassert n >= 1, 'first try fails'\n"
                   "nborch.publish('n', n)")
    write_notebook(folder / "after.ipynb", "import nborch\nnborch.publish('seen', "
                   "upstream['flaky']['notebook'])", parameters="upstream = {}")
    p = Pipeline("outside", root=folder, retries=1, retry_delay="0s")
    p.notebook("flaky.ipynb")
    p.notebook("after.ipynb", upstream=["flaky"])
    return p


def test_notebooks_go_to_an_fsspec_url(workdir: Path):
    p = flaky_pipeline(workdir)
    url = "memory://nborch-outputs/daily"
    run = p.run(home=workdir / ".nborch", output_dir=url)
    assert run.status == "success"
    base = f"{url}/{run.run_id}"
    assert run.tasks["flaky"].output_path == f"{base}/flaky.ipynb"
    assert run.values["after"]["seen"] == f"{base}/flaky.ipynb"  # downstream gets the URL
    fs = fsspec.filesystem("memory")
    names = sorted(Path(f).name for f in fs.ls(f"/nborch-outputs/daily/{run.run_id}",
                                               detail=False))
    assert names == ["after.ipynb", "flaky.attempt-1.ipynb", "flaky.ipynb"]
    with fsspec.open(f"{base}/flaky.attempt-1.ipynb", "r") as f:
        failed = nbformat.read(f, as_version=4)
    assert "first try fails" in json.dumps(failed.cells[-1].outputs)
    # Nothing of the notebooks in the store; the store records where they are.
    assert not list((workdir / ".nborch").rglob("*.ipynb"))
    stored = Store(workdir / ".nborch").get_run(run.run_id)
    assert stored.output_dir == url and stored.tasks["after"].output_path == f"{base}/after.ipynb"
    # An incremental run finds the outputs there and skips.
    again = p.run(home=workdir / ".nborch", output_dir=url, incremental=True)
    assert {t.status for t in again.tasks.values()} == {"skipped"}


def test_output_dir_folder_from_the_cli_and_resume_keeps_it(workdir: Path):
    write_notebook(workdir / "a.ipynb", "pass")
    write_notebook(workdir / "b.ipynb", "import os\nassert os.path.exists('fixed')")
    path = write_pipeline(workdir, {"name": "elsewhere", "tasks": {
        "a": {"notebook": "a.ipynb"}, "b": {"notebook": "b.ipynb", "upstream": ["a"]}}})
    proc = nborch("run", str(path), "--output-dir", "shared/out", "--json", cwd=workdir)
    assert proc.returncode == 1
    run = run_json(proc)
    out = workdir / "shared" / "out" / run["run_id"]
    assert run["tasks"]["a"]["output_path"] == str(out / "a.ipynb") and (out / "b.ipynb").is_file()
    (workdir / "fixed").touch()
    resumed = run_json(nborch("resume", run["run_id"], "--json", cwd=workdir, check=True))
    assert resumed["tasks"]["b"]["output_path"] == str(out / "b.ipynb")
    bad = nborch("run", str(path), "--output-dir", "nosuchscheme://x/y", cwd=workdir)
    assert bad.returncode == 2 and "--output-dir nosuchscheme://x/y" in bad.stderr


def clobbering_pipeline(folder: Path, out: Path) -> Path:
    """A pipeline whose task ``clobber`` puts a folder where its executed notebook goes, so
    writing the notebook fails; ``other`` succeeds, ``after`` depends on ``clobber``."""
    write_notebook(folder / "clobber.ipynb", f"import os\nos.makedirs(os.path.join("
                   f"{str(out)!r}, os.environ['NBORCH_RUN_ID'], 'clobber.ipynb'))")
    write_notebook(folder / "other.ipynb", "pass")
    write_notebook(folder / "after.ipynb", "pass")
    return write_pipeline(folder, {"name": "clobbered", "tasks": {
        "clobber": {"notebook": "clobber.ipynb"}, "other": {"notebook": "other.ipynb"},
        "after": {"notebook": "after.ipynb", "upstream": ["clobber"]}}})


def test_a_notebook_that_cannot_be_written_fails_its_attempt_not_the_run(workdir: Path):
    path = clobbering_pipeline(workdir, workdir / "out")
    proc = nborch("run", str(path), "--output-dir", "out", "--json", cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    assert "the engine failed" not in proc.stderr
    run = run_json(proc)
    error = run["tasks"]["clobber"]["error"]
    assert error["type"] == "OutputWriteError"
    assert f"cannot write the executed notebook to {workdir / 'out' / run['run_id']}" \
        f"/clobber.ipynb: IsADirectoryError" in error["message"]
    stored = Store(workdir / ".nborch").get_run(run["run_id"])
    assert stored.status == "failed"
    assert {n: t.status for n, t in stored.tasks.items()} == {
        "clobber": "failed", "other": "success", "after": "upstream_failed"}


def test_an_engine_that_fails_leaves_no_task_running(workdir: Path, monkeypatch):
    """A bug of ours while recording an attempt's end (here: computing its fingerprint):
    the run ends failed, saying so, with every task ended and every kernel stopped."""
    from conftest import kernels_of

    from nborch.runtime.incremental import Incremental

    def broken(self, name):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Incremental, "fingerprint", broken)
    started = workdir / "slow-started"
    write_notebook(workdir / "slow.ipynb", f"import time\nopen({str(started)!r}, 'w').close()\n"
                   "time.sleep(300)")
    write_notebook(workdir / "quick.ipynb", f"import os, time\nwhile not os.path.exists("
                   f"{str(started)!r}):\n    time.sleep(0.05)")
    p = Pipeline("buggy", root=workdir)
    p.notebook("slow.ipynb")
    p.notebook("quick.ipynb")
    run = p.start(home=workdir / ".nborch").wait(120)
    stored = Store(workdir / ".nborch").get_run(run.run_id)
    for record in (run, stored):
        assert record.status == "failed"
        assert record.error["type"] == "EngineError" and "RuntimeError: a bug" in \
            record.error["message"]
        assert {n: t.status for n, t in record.tasks.items()} == {"slow": "failed",
                                                                  "quick": "failed"}
    assert kernels_of(run.run_id) == []


# -- an attempt on a machine that does not see the run's folder (a remote Dask worker) -----

def away_from_home(folder: Path, location: str, secret: str = "") -> AttemptJob:
    """An attempt whose run's folder (under ``folder``) is not there, as a remote worker
    sees it, and whose artifacts go to ``location``."""
    return AttemptJob(run_id="r1", task="t", attempt=1, notebook="", parameters={}, kernel="",
                      cwd=str(folder), output_path="", secret_values=[secret] if secret else [],
                      log_path=str(folder / "home" / "runs" / "r1" / "t.log"),
                      artifact_location=location)


def writes_artifacts(seen: dict):
    """An attempt's ``run`` that writes two artifacts, then succeeds."""
    def run(job: AttemptJob, request) -> AttemptResult:
        folder = Path(job.env["NBORCH_ARTIFACT_DIR"])
        (folder / "deep").mkdir(parents=True)
        (folder / "deep" / "table.csv").write_text("a,b\n")
        (folder / "top.txt").write_text("top")
        seen.update(folder=folder, private=Path(job.private_folder()), relayed=job.relayed_log)
        return AttemptResult("success", "T0", "T1", None)
    return run


def test_artifacts_away_from_the_home_are_put_to_the_output_location(tmp_path: Path):
    seen: dict = {}
    url = "memory://nborch-artifacts/r1/artifacts/t"
    result = run_off_home(away_from_home(tmp_path, url), None, "here", writes_artifacts(seen))
    assert result.status == "success" and result.error is None
    assert result.artifacts == url and result.relayed_log and seen["relayed"]
    fs = fsspec.filesystem("memory")
    assert fs.cat("/nborch-artifacts/r1/artifacts/t/deep/table.csv") == b"a,b\n"
    assert fs.cat("/nborch-artifacts/r1/artifacts/t/top.txt") == b"top"
    assert seen["folder"].parent == seen["private"] and not seen["private"].exists()


def test_artifacts_that_cannot_be_copied_fail_the_attempt_masked(tmp_path: Path):
    secret = "c0py-s3cr3t"
    blocked = tmp_path / f"blocked-{secret}"
    blocked.write_text("a file where a folder should be")
    result = run_off_home(away_from_home(tmp_path, str(blocked / "artifacts"), secret), None,
                          "here", writes_artifacts({}))
    assert result.status == "failed" and result.error["type"] == "ArtifactCopyError"
    assert result.error["message"].startswith(
        f"cannot copy the task's artifacts to {tmp_path}/blocked-***/artifacts: ")
    assert secret not in result.error["message"] and result.artifacts is None
