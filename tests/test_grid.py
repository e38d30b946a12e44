"""Parameter grids: one notebook, one task per combination, run as a fan-out.

Real kernels, real papermill, a real store; tiny notebooks to keep it quick.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline, SpecError, Store
from nborch.core.grouping import groups, summary

PIPELINE = "sales_pipeline.yaml"  # a name no message would contain by accident


def _region(root: Path, fail_if: str = "") -> None:
    """``region.ipynb`` publishes ``region-n``; it fails while the file ``fail_if`` exists."""
    write_notebook(root / "nb" / "region.ipynb",
                   "import os, nborch\n"
                   f"if {fail_if!r} and os.path.exists({str(root / fail_if)!r})"
                   " and region == 'us':\n"
                   "    raise RuntimeError('no data for ' + region)\n"
                   "nborch.publish('v', f'{region}-{n}')",
                   parameters="region = 'eu'\nn = 1")


def _join(root: Path) -> None:
    write_notebook(root / "nb" / "join.ipynb",
                   "import nborch\n"
                   "nborch.publish('names', list(upstream))\n"
                   "nborch.publish('all', [u['values']['v'] for u in upstream.values()])",
                   parameters="upstream = {}")


def _spec(**tasks) -> dict:
    base = {"by_region": {"notebook": "nb/region.ipynb", "grid": {"region": ["eu", "us"]}},
            "join": {"notebook": "nb/join.ipynb", "upstream": ["by_region"]}}
    base.update(tasks)
    return {"name": "sales", "parameters": {"second": "us"}, "tasks": base}


# -- running ---------------------------------------------------------------------------------

def test_2x2_grid_join_gets_every_instance_in_order(workdir: Path):
    _region(workdir)
    _join(workdir)
    write_notebook(workdir / "nb" / "prep.ipynb", "pass")
    write_pipeline(workdir, _spec(
        prep={"notebook": "nb/prep.ipynb"},
        by_region={"notebook": "nb/region.ipynb", "upstream": ["prep"],
                   "grid": {"region": ["eu", "{{ params.second }}"], "n": [1, 2]}}), PIPELINE)
    proc = nborch("run", PIPELINE, "--json", "--max-parallel", "2", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    data = run_json(proc)
    names = [f"by_region-{i}" for i in range(4)]
    assert list(data["tasks"]) == [*names, "join", "prep"]  # the file's order, instances in place
    assert data["tasks"]["join"]["values"] == {"names": names,
                                               "all": ["eu-1", "eu-2", "us-1", "us-2"]}
    for name in names:
        assert data["tasks"][name]["grid"] == "by_region"
        assert data["tasks"][name]["upstream"] == ["prep"]
        assert Path(data["tasks"][name]["output_path"]).name == f"{name}.ipynb"
    assert "grid" not in data["tasks"]["join"]
    # plain progress (not a terminal) groups the instances
    assert "by_region: 4/4 done" in proc.stderr
    assert "by_region-0: running" not in proc.stderr

    shown = nborch("show", "latest", cwd=workdir, check=True).stdout
    assert "by_region (grid)" in shown and "4/4 done" in shown
    assert not any(line.lstrip().startswith("by_region-") and "success" in line
                   for line in shown.splitlines())
    stored = run_json(nborch("show", "latest", "--json", cwd=workdir, check=True))
    assert [stored["tasks"][n]["grid"] for n in names] == ["by_region"] * 4
    assert stored["tasks"]["by_region-3"]["values"] == {"v": "us-2"}


def test_failed_instance_then_resume_reruns_only_it(workdir: Path):
    _region(workdir, fail_if="broken")
    _join(workdir)
    (workdir / "broken").write_text("")
    write_pipeline(workdir, _spec(), PIPELINE)
    first = nborch("run", PIPELINE, "--json", "--max-parallel", "2", cwd=workdir)
    assert first.returncode == 1, first.stderr
    data = run_json(first)
    states = {n: t["status"] for n, t in data["tasks"].items()}
    assert states == {"by_region-0": "success", "by_region-1": "failed",
                      "join": "upstream_failed"}
    assert data["tasks"]["by_region-1"]["error"]["message"] == "no data for us"
    # A failing instance is named with its own parameters, recorded with the run.
    assert "by_region-1 (region=us): failed - RuntimeError: no data for us" in first.stderr
    assert data["tasks"]["by_region-1"]["own_values"] == {"region": "us"}
    assert Store(workdir / ".nborch").get_run(data["run_id"]).tasks["by_region-0"].own_values \
        == {"region": "eu"}

    shown = nborch("show", "latest", cwd=workdir).stdout
    assert "1/2 done, 1 failed" in shown
    assert "by_region-1 (region=us) failed" in shown and "no data for us" in shown

    (workdir / "broken").unlink()
    second = nborch("resume", "latest", "--json", cwd=workdir)
    assert second.returncode == 0, second.stderr
    after = run_json(second)["tasks"]
    assert {n: t["status"] for n, t in after.items()} == dict.fromkeys(after, "success")
    assert after["by_region-0"]["attempts"] == 1
    assert after["by_region-0"]["started_at"] == data["tasks"]["by_region-0"]["started_at"]
    assert after["by_region-1"]["attempts"] == 2
    assert after["join"]["values"]["all"] == ["eu-1", "us-1"]


def test_force_grid_name_with_incremental_reruns_every_instance(workdir: Path):
    _region(workdir)
    _join(workdir)
    write_pipeline(workdir, _spec(), PIPELINE)
    nborch("run", PIPELINE, cwd=workdir, check=True)

    def states(*args):
        proc = nborch("run", PIPELINE, "--incremental", "--json", *args, cwd=workdir, check=True)
        return {n: t["status"] for n, t in run_json(proc)["tasks"].items()}

    assert states() == dict.fromkeys(["by_region-0", "by_region-1", "join"], "skipped")
    assert states("--force", "by_region-1") == {"by_region-0": "skipped",
                                                "by_region-1": "success", "join": "success"}
    assert states("--force", "by_region") == dict.fromkeys(
        ["by_region-0", "by_region-1", "join"], "success")
    bad = nborch("run", PIPELINE, "--incremental", "--force", "by_regoin", cwd=workdir)
    assert bad.returncode == 2 and "by_regoin" in bad.stderr


def test_python_api_grid_downstream_and_trigger_rules(workdir: Path):
    _region(workdir, fail_if="broken")
    (workdir / "broken").write_text("")
    write_notebook(workdir / "nb" / "after.ipynb", "pass")
    p = Pipeline("api")
    grid = p.notebook("nb/region.ipynb", name="by_region", grid={"region": ["eu", "us", "apac"]})
    assert grid.name == "by_region"
    assert [t.name for t in grid.tasks] == ["by_region-0", "by_region-1", "by_region-2"]
    assert [t.parameters for t in grid.tasks] == [{"region": r} for r in ("eu", "us", "apac")]
    p.notebook("nb/after.ipynb", name="strict", upstream=[grid])
    p.notebook("nb/after.ipynb", name="always", upstream=["by_region"], trigger="all_done")
    p.notebook("nb/after.ipynb", name="on_fail", upstream=[grid], trigger="one_failed")
    assert p.tasks["strict"].upstream == ("by_region-0", "by_region-1", "by_region-2")
    run = p.run(max_parallel=2)
    assert {n: t.status for n, t in run.tasks.items()} == {
        "by_region-0": "success", "by_region-1": "failed", "by_region-2": "success",
        "strict": "upstream_failed", "always": "success", "on_fail": "success"}
    assert "by_region-1" in run.tasks["strict"].reason
    assert groups(run) == {"by_region": ["by_region-0", "by_region-1", "by_region-2"]}
    # the store records each instance's grid
    stored = Store(workdir / ".nborch").get_run(run.run_id)
    assert groups(stored) == groups(run)


# -- bad input ---------------------------------------------------------------------------------

BAD = {
    "empty list": ({"grid": {"region": []}}, ["'region'", "empty list"]),
    "not a list": ({"grid": {"region": "eu"}}, ["'region'", "must be a list"]),
    "not a mapping": ({"grid": ["eu", "us"]}, ["'grid' must be a mapping"]),
    "empty grid": ({"grid": {}}, ["'grid' must be a mapping"]),
    "undeclared": ({"grid": {"regoin": ["eu"]}}, ["unknown parameter 'regoin'", "region.ipynb"]),
    "bad type": ({"grid": {"n": [1, "two"]}}, ["parameter 'n'", "'two'", "region.ipynb"]),
    "bad template": ({"grid": {"region": ["{{ params.nope }}"]}}, ["nope"]),
    "in parameters too": ({"grid": {"region": ["eu"]}, "parameters": {"region": "us"}},
                          ["'region'", "both"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_grid_is_exit_2_and_nothing_recorded(workdir: Path, case: str):
    _region(workdir)
    _join(workdir)
    extra, expect = BAD[case]
    write_pipeline(workdir, _spec(by_region={"notebook": "nb/region.ipynb", **extra}), PIPELINE)
    for command in ("validate", "run"):
        proc = nborch(command, PIPELINE, cwd=workdir)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        for text in [PIPELINE, "by_region", *expect]:
            assert text in proc.stderr, (text, proc.stderr)
        assert proc.stderr.count("by_region") <= 3, proc.stderr  # once, not once per instance
    assert not (workdir / ".nborch").exists()


def test_generated_name_colliding_with_a_task_is_an_error(workdir: Path):
    _region(workdir)
    _join(workdir)
    other = {"notebook": "nb/join.ipynb"}
    for tasks in ({"by_region-1": other, **_spec()["tasks"]},   # the task before the grid
                  {**_spec()["tasks"], "by_region-1": other}):  # and after it
        write_pipeline(workdir, {"name": "sales", "tasks": tasks}, PIPELINE)
        proc = nborch("run", PIPELINE, cwd=workdir)
        assert proc.returncode == 2, proc.stderr
        assert PIPELINE in proc.stderr and "'by_region-1'" in proc.stderr
        assert "grid" in proc.stderr
    assert not (workdir / ".nborch").exists()
    # A task and a grid of the same name (only possible in Python: YAML keys are unique).
    p = Pipeline("api")
    p.notebook("nb/region.ipynb", name="by_region", grid={"region": ["eu"]})
    with pytest.raises(SpecError, match="'by_region'.*already the name of a grid"):
        p.notebook("nb/join.ipynb", name="by_region")
    p = Pipeline("api")
    p.notebook("nb/join.ipynb", name="by_region")
    with pytest.raises(SpecError, match="duplicate task name 'by_region'"):
        p.notebook("nb/region.ipynb", name="by_region", grid={"region": ["eu"]})


def test_more_than_10000_instances_needs_allow_large_grid(workdir: Path):
    _region(workdir)
    _join(workdir)
    grid = {"region": [f"r{i}" for i in range(101)], "n": list(range(100))}  # 10,100
    write_pipeline(workdir, _spec(by_region={"notebook": "nb/region.ipynb", "grid": grid}),
                   PIPELINE)
    for command in ("validate", "run"):
        proc = nborch(command, PIPELINE, cwd=workdir)
        assert proc.returncode == 2, proc.stderr
        assert "10,100" in proc.stderr and "--allow-large-grid" in proc.stderr
    assert not (workdir / ".nborch").exists()
    ok = nborch("validate", PIPELINE, "--allow-large-grid", cwd=workdir, check=True)
    assert "10101 tasks" in ok.stdout
    with pytest.raises(SpecError, match="allow_large_grid=True"):
        Pipeline("api").notebook("nb/region.ipynb", grid=grid)
    big = Pipeline("api", allow_large_grid=True).notebook("nb/region.ipynb", grid=grid)
    assert big.tasks[-1].name == "region-10099"
    assert big.tasks[-1].parameters == {"region": "r100", "n": 99}


# -- views without kernels --------------------------------------------------------------------

def test_summary_counts_states():
    states = ["success"] * 37 + ["failed"] * 2 + ["running"] * 3 + ["pending"] * 58
    assert summary(states) == "37/100 done, 2 failed, 3 running, 58 pending"
    assert summary(["skipped", "success"]) == "2/2 done (1 skipped)"


def test_show_groups_a_500_instance_grid_into_one_line():
    import io

    from rich.console import Console

    from nborch.core.run import Run, TaskRun
    from nborch.ui.console import print_run
    tasks = {f"big-{i}": TaskRun(f"big-{i}", status="failed" if i < 7 else "success", grid="big",
                                 attempts=1, notebook="b.ipynb", values={"i": i},
                                 error={"type": "ValueError", "message": f"bad {i}", "cell": 1}
                                 if i < 7 else None)
             for i in range(500)}
    tasks["report"] = TaskRun("report", status="upstream_failed", notebook="r.ipynb",
                              upstream=tuple(tasks), reason="upstream failed: big-0")
    out = io.StringIO()
    print_run(Run("r1", "p", "failed", tasks=tasks), Console(file=out, width=200))
    text = out.getvalue()
    assert "big (grid)" in text and "493/500 done, 7 failed" in text
    assert len(text.splitlines()) < 40
    assert "and errors of 2 more instances of big" in text
    assert "and published values of 495 more instances of big" in text
