"""Script notebooks: ``.py`` files in jupytext's percent or light format run as tasks."""

from __future__ import annotations

from pathlib import Path

import nbformat
from conftest import nborch, run_json, write_notebook, write_pipeline

from nborch import Pipeline

PERCENT = '''# %% tags=["parameters"]
region = "eu"
upstream = ["extract"]

# %%
import nborch
rows = upstream["extract"]["values"]["rows"]
print("cleaning", region)
nborch.publish("summary", f"{region}:{rows * 2}")
'''

LIGHT = '''# + tags=["parameters"]
factor = 1
# -

import nborch
nborch.publish("scaled", factor * 10)
'''


def test_percent_and_light_scripts_run_with_injected_parameters(workdir: Path):
    write_notebook(workdir / "extract.ipynb", "import nborch\nnborch.publish('rows', 21)")
    (workdir / "clean.py").write_text(PERCENT)
    (workdir / "scale.py").write_text(LIGHT)
    path = write_pipeline(workdir, {"name": "scripts", "tasks": {
        "extract": {"notebook": "extract.ipynb"},
        "clean": {"notebook": "clean.py", "upstream": ["extract"], "parameters": {"region": "us"}},
        "scale": {"notebook": "scale.py", "parameters": {"factor": 3}}}})
    proc = nborch("run", str(path), "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert run["tasks"]["clean"]["values"] == {"summary": "us:42"}
    assert run["tasks"]["scale"]["values"] == {"scaled": 30}
    executed = Path(run["tasks"]["clean"]["output_path"])
    assert executed.suffix == ".ipynb"  # the executed copy is a notebook
    nb = nbformat.read(executed, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert ["parameters"] in tags and ["injected-parameters"] in tags
    assert "cleaning us" in nb.cells[-1].outputs[0]["text"]
    # A parameter the script does not declare is caught before anything runs.
    bad = write_pipeline(workdir, {"name": "bad", "tasks": {
        "scale": {"notebook": "scale.py", "parameters": {"facter": 3}}}}, "bad.yaml")
    proc = nborch("run", str(bad), cwd=workdir)
    assert proc.returncode == 2 and "facter" in proc.stderr and "scale.py" in proc.stderr


def test_scripts_in_folder_pipelines_arrows_and_the_api(workdir: Path):
    flow = workdir / "flow"
    write_notebook(flow / "extract.ipynb", "import nborch\nnborch.publish('rows', 5)")
    (flow / "clean.py").write_text(PERCENT)
    (flow / "helpers.py").write_text("def double(x):\n    return 2 * x\n")  # not a notebook
    proc = nborch("run", str(flow), "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert set(run["tasks"]) == {"extract", "clean"}  # upstream read from the script's cell
    assert run["tasks"]["clean"]["values"] == {"summary": "eu:10"}
    from nborch.spec.loader import from_arrows
    arrows = from_arrows("flow/extract.ipynb >> flow/clean.py", workdir, "arrows")
    assert arrows.tasks["clean"].upstream == ("extract",)
    p = Pipeline("api", root=flow)
    p.notebook("extract.ipynb")
    p.notebook("clean.py", parameters={"region": "apac"})
    assert p.run(home=workdir / ".nborch").values["clean"] == {"summary": "apac:10"}
