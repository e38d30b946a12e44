"""Ploomber projects (SPEC 1.6): a Ploomber pipeline.yaml runs unchanged, with real kernels.

The projects here are written in the shapes Ploomber's documentation shows (its ml-basic
template, function tasks, grids, ``env.yaml``); none of them is edited for nborch.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest
from conftest import nborch, run_json, write_notebook


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


PIPELINE = """
tasks:
  - source: scripts/get.py
    product:
      nb: output/get.ipynb
      data: '{{data_dir}}/raw.csv'
    params:
      rows: '{{sample.rows}}'
      project: '{{here}}'

  - source: tasks.clean
    product: output/clean.csv
    params:
      factor: 10
    on_finish: hooks.check_clean

  - source: fit.ipynb
    name: fit-
    product:
      nb: output/fit-[[alpha]].ipynb
      model: output/models/model-[[alpha]].txt
    params:
      note: not declared in the notebook
    grid:
      alpha: [1, 2]

  - source: scripts/report.py
    product: output/report.html

on_finish: hooks.pipeline_done
"""

GET = """
# %% tags=["parameters"]
# declare a list tasks whose products you want to use as inputs
upstream = None
product = None
rows = None
project = None

# %%
import os
assert os.getcwd() == project, os.getcwd()  # Ploomber runs the kernel in the project's folder
with open(product["data"], "w") as out:
    out.write("\\n".join(str(i) for i in range(rows)))
print("rows", rows)
"""

TASKS = """
def clean(product, upstream, factor):
    with open(upstream["get"]["data"]) as raw:
        numbers = [int(line) * factor for line in raw.read().split()]
    with open(product, "w") as out:
        out.write(",".join(map(str, numbers)))
"""

HOOKS = """
import json

def check_clean(product, params):  # str(): Ploomber passes a File object
    with open(str(product) + ".checked", "w") as out:
        json.dump({"product": str(product), "factor": params["factor"]}, out)

def pipeline_done(suffix="!"):
    with open("pipeline-done.txt", "w") as out:
        out.write("done" + suffix)
"""

REPORT = """
# %% tags=["parameters"]
upstream = ["fit-*", "get"]
product = None

# %%
fits = upstream["fit-*"]
print("REPORT", sorted(fits), open(upstream["get"]["data"]).read().split())
for name, fit in sorted(fits.items()):
    print(name, open(fit["model"]).read())
"""

FIT_PARAMETERS = 'upstream = ["clean"]\nproduct = None\nalpha = None'
FIT_BODY = ('values = open(upstream["clean"]).read()\n'
            'with open(product["model"], "w") as out:\n'
            '    out.write(f"alpha={alpha} on {values}")')


def _project(folder: Path) -> Path:
    """A Ploomber project in the ml-basic shape: scripts, a notebook, a function, a grid."""
    _write(folder / "pipeline.yaml", PIPELINE)
    _write(folder / "env.yaml", "data_dir: output/data\nsample:\n  rows: 3\n")
    _write(folder / "scripts" / "get.py", GET)
    _write(folder / "scripts" / "report.py", REPORT)
    _write(folder / "tasks.py", TASKS)
    _write(folder / "hooks.py", HOOKS)
    write_notebook(folder / "fit.ipynb", FIT_BODY, parameters=FIT_PARAMETERS)
    return folder / "pipeline.yaml"


def test_a_ploomber_project_runs_unchanged(workdir: Path):
    """Products land where Ploomber writes them, relative to the project's folder (not the
    current one); upstream and product come in Ploomber's shapes; nb is the executed notebook
    (HTML when it ends in .html); a grid's instances and products are named as Ploomber
    names them; function tasks and hooks run."""
    project = workdir / "project"
    pipeline = _project(project)
    out = project / "output"

    proc = nborch("run", str(pipeline), "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = run_json(proc)
    tasks = run["tasks"]
    assert list(tasks) == ["get", "clean", "fit-0", "fit-1", "report"]
    assert all(t["status"] == "success" for t in tasks.values()), tasks
    assert tasks["fit-0"]["upstream"] == ["clean"]
    assert sorted(tasks["report"]["upstream"]) == ["fit-0", "fit-1", "get"]

    # env.yaml keys (nested too) and {{here}} rendered; the CSV where Ploomber puts it
    assert (out / "data" / "raw.csv").read_text() == "0\n1\n2"
    assert tasks["get"]["products"] == {"nb": str(out / "get.ipynb"),
                                        "data": str(out / "data" / "raw.csv")}
    # the nb product is the executed notebook, with Ploomber's injected cell
    executed = nbformat.read(out / "get.ipynb", as_version=4)
    injected = next(c for c in executed.cells
                    if "injected-parameters" in c.metadata.get("tags", []))
    assert "rows = 3" in injected.source and "upstream" not in injected.source
    assert any("rows 3" in o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    # the store keeps its own record of the attempt
    assert tasks["get"]["output_path"].startswith(str(workdir / ".nborch"))

    # the function task read upstream["get"]["data"] and got its params; its hook ran
    assert (out / "clean.csv").read_text() == "0,10,20"
    checked = json.loads((out / "clean.csv.checked").read_text())
    assert checked == {"product": str(out / "clean.csv"), "factor": 10}
    assert (workdir / "pipeline-done.txt").read_text() == "done!"  # in the process's folder
    # Ploomber's grid: names NAME + index, products suffixed -index, [[alpha]] replaced
    assert (out / "models" / "model-1-0.txt").read_text() == "alpha=1 on 0,10,20"
    assert (out / "models" / "model-2-1.txt").read_text() == "alpha=2 on 0,10,20"
    assert (out / "fit-1-0.ipynb").is_file() and (out / "fit-2-1.ipynb").is_file()
    # an nb product ending in .html is the executed notebook exported as HTML
    import html as html_text
    html = html_text.unescape((out / "report.html").read_text())
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "REPORT ['fit-0', 'fit-1'] ['0', '1', '2']" in html
    assert "fit-1 alpha=2 on 0,10,20" in html

    # validate, plot, show and --incremental work on the same file
    assert nborch("validate", str(pipeline), cwd=workdir).returncode == 0
    plot = nborch("plot", str(pipeline), "-o", "dag.dot", cwd=workdir)
    assert plot.returncode == 0, plot.stderr
    assert '"fit-0"' in (workdir / "dag.dot").read_text()
    show = nborch("show", run["run_id"], cwd=workdir, check=True).stdout
    assert "fit- (grid)" in show and "output/report.html" in show
    again = run_json(nborch("run", str(pipeline), "--incremental", "--json", cwd=workdir,
                            check=True))
    assert {t["status"] for t in again["tasks"].values()} == {"skipped"}


def test_grid_instances_without_a_dash_and_wildcard_upstream(workdir: Path):
    """``name: fit`` gives ``fit0``, ``fit1`` (Ploomber's naming), and products without
    placeholders get ``-0``, ``-1``; a function task downstream of the grid gets
    ``upstream["fit*"]`` as a mapping; upstream from the task's ``upstream:`` key."""
    _write(workdir / "pipeline.yaml", """
        meta:
          extract_upstream: false
        executor: parallel
        tasks:
          - source: fit.py
            name: fit
            product: out/fit.ipynb
            grid:
              - {alpha: [1], beta: [a, b]}
              - {alpha: [3], beta: [c]}
            papermill_params: {log_output: true}
          - source: tasks.collect
            upstream: ["fit*"]
            product: {summary: out/summary.json}
            serializer: null
        """)
    _write(workdir / "fit.py", """
        # %% tags=["parameters"]
        upstream = None
        product = None
        alpha = None
        beta = None

        # %%
        print(alpha, beta)
        """)
    _write(workdir / "tasks.py", """
        import json

        def collect(product, upstream):
            with open(product["summary"], "w") as out:
                json.dump(upstream["fit*"], out)
        """)
    proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks = run_json(proc)["tasks"]
    assert list(tasks) == ["fit0", "fit1", "fit2", "collect"]
    summary = json.loads((workdir / "out" / "summary.json").read_text())
    assert summary == {f"fit{i}": str(workdir / "out" / f"fit-{i}.ipynb") for i in range(3)}
    executed = nbformat.read(workdir / "out" / "fit-2.ipynb", as_version=4)
    assert "3 c" in executed.cells[-1].outputs[0]["text"]


def test_function_task_failures_are_recorded_like_notebooks(workdir: Path):
    """A function that raises fails with its exception (and is retried when asked); one that
    returns without writing its product fails as Ploomber fails it."""
    _write(workdir / "pipeline.yaml", """
        tasks:
          - source: tasks.broken
            product: out/broken.txt
            retries: 1
            retry_delay: 0
          - source: tasks.lazy
            product: out/lazy.txt
        """)
    _write(workdir / "tasks.py", """
        def broken(product):
            raise ValueError("no data today")

        def lazy(product):
            pass
        """)
    proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tasks = run_json(proc)["tasks"]
    assert tasks["broken"]["error"]["type"] == "ValueError"
    assert tasks["broken"]["attempts"] == 2
    assert tasks["lazy"]["error"]["type"] == "ProductMissing"
    assert str(workdir / "out" / "lazy.txt") in tasks["lazy"]["error"]["message"]
    executed = nbformat.read(tasks["broken"]["output_path"], as_version=4)
    assert "from tasks import broken" in executed.cells[-1].source


def _problems(workdir: Path, spec: str, *files: tuple[str, str]) -> str:
    _write(workdir / "pipeline.yaml", spec)
    for name, text in files:
        _write(workdir / name, text)
    proc = nborch("validate", "pipeline.yaml", cwd=workdir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not (workdir / ".nborch").exists()
    return proc.stderr


SCRIPT = '# %% tags=["parameters"]\nupstream = None\nproduct = None\n\n# %%\nprint(1)\n'


def test_what_nborch_does_not_run_is_a_clear_error_naming_the_task(workdir: Path):
    stderr = _problems(workdir, """
        clients:
          SQLScript: db.get_client
        tasks:
          - source: sql/clean.sql
            product: [clean, table]
          - source: tasks.make
            product: out/make.parquet
            serializer: io.serialize
          - source: uses_ploomber.py
            product: out/up.ipynb
          - source: ok.py
            name: report
            product: out/report.ipynb
            product_client: clients.get
          - source: ok.py
            name: nb-less
            product: {data: out/x.csv}
        """, ("tasks.py", "def make(product):\n    pass\n"),
        ("uses_ploomber.py", SCRIPT + "from ploomber import DAG\n"), ("ok.py", SCRIPT))
    assert "'clients' is not supported" in stderr
    assert "task 'sql/clean.sql'" in stderr and "SQL tasks" in stderr
    assert "task 'tasks.make'" in stderr and "'serializer' is not supported" in stderr
    assert "task 'uses_ploomber.py'" in stderr and "imports ploomber" in stderr
    assert "task 'report'" in stderr and "'product_client' is not supported" in stderr
    assert "task 'nb-less'" in stderr and "no 'nb' key" in stderr


@pytest.mark.parametrize("case", ["strict", "placeholder", "signature", "upstream", "name"])
def test_bad_ploomber_specs_are_exit_2(workdir: Path, case: str):
    specs = {
        "strict": ("tasks:\n  - source: ok.py\n    product: out/ok.ipynb\n"
                   "    static_analysis: strict\n    params: {extra: 1}\n",
                   "parameter 'extra' is not declared"),
        "placeholder": ("tasks:\n  - source: ok.py\n    product: '{{missing}}/ok.ipynb'\n",
                        "'missing' is undefined"),
        "signature": ("tasks:\n  - source: tasks.make\n    product: out/x.csv\n"
                      "    params: {size: 3}\n", "make() takes no 'size' argument"),
        "upstream": ("tasks:\n  - source: up.py\n    product: out/up.ipynb\n",
                     "unknown upstream task 'nowhere'"),
        "name": ("tasks:\n  - source: ok.py\n    name: my report\n    product: out/r.ipynb\n",
                 "task name 'my report'"),
    }
    spec, expected = specs[case]
    stderr = _problems(workdir, spec, ("ok.py", SCRIPT), ("tasks.py", "def make(product):\n"
                                                          "    pass\n"),
                       ("up.py", SCRIPT.replace("upstream = None", "upstream = ['nowhere']")))
    assert expected in stderr, stderr
