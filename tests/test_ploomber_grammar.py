"""Ploomber's documented grammar (issue 18): grids named by their values, computed
parameters, env-file switching, HTML reports, hooks, refusals; each in the shape Ploomber's
documentation shows it. The projects are written here; none is copied from Ploomber."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jinja2
import pytest
from conftest import nborch, run_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nborch.core.errors import SpecError
from nborch.spec.loader import load
from nborch.spec.ploomber import grid


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def _load(folder: Path, spec: str, **files: str):
    _write(folder / "pipeline.yaml", spec)
    for name, text in files.items():
        _write(folder / name.replace("__", "/"), text)
    return load(folder / "pipeline.yaml")


def _problems(folder: Path, spec: str, **files: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        _load(folder, spec, **files)
    return caught.value.problems


SCRIPT = """
# %% tags=["parameters"]
upstream = None
product = None

# %%
print("ran")
"""


# -- grids --------------------------------------------------------------------------------

def test_a_grid_is_named_by_its_values_and_a_missing_placeholder_renders_empty(workdir: Path):
    """``name: fit-[[alpha]]-[[kind]]`` names each instance from its values; a placeholder
    one of a list of grids lacks renders empty, in names and products; a single value is a
    one-element list; every product still gets -index before its extension."""
    pipeline = _load(workdir, """
        tasks:
          - source: fit.py
            name: fit-[[alpha]]-[[kind]]
            product:
              nb: out/fit-[[alpha]].html
              model: out/m-[[alpha]][[kind]].tar.gz
            params:
              seed: 7
            grid:
              - alpha: [1, 2]
                kind: ridge
              - alpha: [0.5]
        """, **{"fit.py": SCRIPT})
    tasks = pipeline.tasks
    assert list(tasks) == ["fit-1-ridge", "fit-2-ridge", "fit-0.5-"]
    assert tasks["fit-1-ridge"].parameters == {"alpha": 1, "kind": "ridge", "seed": 7}
    assert tasks["fit-0.5-"].parameters == {"alpha": 0.5, "seed": 7}
    assert tasks["fit-1-ridge"].product == {"nb": "out/fit-1-0.html",
                                            "model": "out/m-1ridge-0.tar.gz"}
    assert tasks["fit-0.5-"].product == {"nb": "out/fit-0.5-2.html", "model": "out/m-0.5-2.tar.gz"}
    assert pipeline.grids["fit-"] == ("fit-1-ridge", "fit-2-ridge", "fit-0.5-")


def test_grid_problems_are_reported_with_the_task(workdir: Path):
    problems = _problems(workdir, """
        tasks:
          - source: fit.py
            name: fit-[[beta]]
            product: out/fit.ipynb
            grid: {alpha: [1, 2]}
          - source: fit.py
            name: other-[[alpha]]
            product: out/other.ipynb
            grid: {alpha: [a b]}
          - source: fit.py
            name: third
            product: out/third.ipynb
            params: {alpha: 3}
            grid: {alpha: [1]}
        """, **{"fit.py": SCRIPT})
    text = "\n".join(problems)
    assert "several instances are named 'fit-'" in text
    assert "task name 'other-a b'" in text
    assert "'alpha' set in both" in text


def _ploomber_name(template: str, values: dict) -> str:
    """Ploomber 0.23's TaskGroup naming, written independently: jinja2 with [[ ]]."""
    return jinja2.Template(template, variable_start_string="[[",
                           variable_end_string="]]").render(**values)


def _ploomber_path(path: str, index: int, values: dict) -> str:
    p = Path(path)
    suffix = "".join(p.suffixes)
    return _ploomber_name(str(p.parent / f"{p.name.replace(suffix, '')}-{index}{suffix}"),
                          values)


VALUES = st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.booleans(),
                   st.none())


@given(value=VALUES, other=VALUES, index=st.integers(0, 10_000))
def test_placeholders_render_any_value_as_ploomber_does(value, other, index):
    values = {"alpha": value, "beta": other}
    for template in ("fit-[[alpha]]", "[[alpha]]-[[beta]][[gamma]]", "x[[ alpha ]]y"):
        assert grid.instance_name(template, index, values) == _ploomber_name(template, values)
    assert grid.instance_name("fit-", index, values) == f"fit-{index}"
    for path in ("out/m-[[alpha]].txt", "out/[[alpha]]/r.tar.gz", "m[[beta]]"):
        assert grid.instance_path(path, index, values) == _ploomber_path(path, index, values)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(min_size=1, max_size=12))
def test_any_grid_value_names_a_task_or_is_a_clear_problem(workdir: Path, value: str):
    """Whatever the characters of a value, the instance is named as Ploomber names it, or
    validation says which name nborch cannot accept; it never crashes."""
    spec = ("tasks:\n  - source: fit.py\n    name: fit-[[v]]\n    product: out/[[v]].ipynb\n"
            f"    grid: {{v: [{json.dumps(value)}]}}\n")
    (workdir / "fit.py").write_text(SCRIPT, encoding="utf-8")
    (workdir / "pipeline.yaml").write_text(spec, encoding="utf-8")
    try:
        pipeline = load(workdir / "pipeline.yaml")
    except SpecError as exc:
        assert any("task name" in p or "placeholder" in p or "template" in p
                   for p in exc.problems), exc.problems
        return
    rendered = value if "{{" not in value and "{%" not in value else None
    if rendered is not None:
        assert list(pipeline.tasks) == [_ploomber_name("fit-[[v]]", {"v": value})]
        assert pipeline.tasks[f"fit-{value}"].parameters == {"v": value}


# -- computed values ------------------------------------------------------------------------

PARAMS_PY = """
import os

def rows(scale=1):
    return [1, 2, 3][:scale]

def where():
    return {"pid": os.getpid(), "cwd": os.getcwd()}

def alphas():
    return range(3)

def nothing():
    return None

def broken():
    raise ValueError("no index today")
"""


def test_computed_params_and_grid_values_are_called_when_the_pipeline_is_read(workdir: Path):
    pipeline = _load(workdir, """
        tasks:
          - source: get.py
            product: out/get.ipynb
            params:
              rows: {dotted_path: "params::rows", scale: 2}
              where: params::where
              plain: not::a dotted path either
          - source: fit.py
            name: fit-
            product: out/fit.ipynb
            params: {literal: params::rows}
            grid:
              alpha: params::alphas
              beta: {dotted_path: "params::rows", scale: 1}
        """, **{"get.py": SCRIPT, "fit.py": SCRIPT, "params.py": PARAMS_PY})
    get = pipeline.tasks["get"].parameters
    assert get["rows"] == [1, 2]
    assert get["where"]["cwd"] == str(workdir) and get["where"]["pid"] > 0
    assert get["plain"] == "not::a dotted path either"
    assert [t.parameters for t in pipeline.tasks.values() if t.grid == "fit-"] == [
        {"alpha": a, "beta": 1, "literal": "params::rows"} for a in range(3)]  # as Ploomber


def test_a_computed_value_that_fails_is_a_problem_naming_it(workdir: Path):
    problems = _problems(workdir, """
        tasks:
          - source: get.py
            product: out/get.ipynb
            params: {a: params::nothing, b: params::broken, c: missing_module::f}
        """, **{"get.py": SCRIPT, "params.py": PARAMS_PY})
    text = "\n".join(problems)
    assert "params 'a': calling params::nothing failed: TypeError: it returned None" in text
    assert "params 'b': calling params::broken failed: ValueError: no index today" in text
    assert "params 'c': calling missing_module::f failed: ModuleNotFoundError" in text


def test_resources_are_injected_as_absolute_paths(workdir: Path):
    spec = ("tasks:\n  - source: get.py\n    product: out/get.ipynb\n"
            "    params:\n      resources_: {config: conf/settings.json}\n")
    _write(workdir / "conf" / "settings.json", "{}")
    pipeline = _load(workdir, spec, **{"get.py": SCRIPT})
    assert pipeline.tasks["get"].parameters == {
        "resources_": {"config": str(workdir / "conf" / "settings.json")}}
    (workdir / "conf" / "settings.json").unlink()
    assert "params.resources_ 'config'" in "\n".join(_problems(workdir, spec))


# -- env files ------------------------------------------------------------------------------

NOW = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?"


def test_ploomber_env_filename_picks_the_env_file(workdir: Path, monkeypatch):
    spec = """
        tasks:
          - source: load.py
            product:
              nb: products/{{timestamp}}/load.html
              data: products/{{timestamp}}/load.csv
        """
    files = {"load.py": SCRIPT, "env.yaml": "timestamp: dev\n",
             "env.cron.yaml": "timestamp: '{{now}}'\nlater: '{{timestamp}}-x'\n"}
    assert _load(workdir, spec, **files).tasks["load"].product["data"] == "products/dev/load.csv"
    monkeypatch.setenv("PLOOMBER_ENV_FILENAME", "env.cron.yaml")
    data = _load(workdir, spec, **files).tasks["load"].product["data"]
    assert re.fullmatch(rf"products/{NOW}/load\.csv", data), data
    monkeypatch.setenv("PLOOMBER_ENV_FILENAME", "env.missing.yaml")
    assert "PLOOMBER_ENV_FILENAME='env.missing.yaml', but there is no such file" in \
        "\n".join(_problems(workdir, spec, **files))
    monkeypatch.setenv("PLOOMBER_ENV_FILENAME", "conf/env.yaml")
    assert "must be a file name" in "\n".join(_problems(workdir, spec, **files))


def test_the_env_file_in_the_current_folder_comes_first(workdir: Path, monkeypatch):
    project = workdir / "project"
    _write(project / "env.yaml", "where: project\n")
    _write(workdir / "env.yaml", "where: cwd\nnested: '{{where}}/more'\n")
    pipeline = _load(project, "tasks:\n  - source: load.py\n    product: '{{nested}}/x.ipynb'\n",
                     **{"load.py": SCRIPT})
    assert pipeline.tasks["load"].product == "cwd/more/x.ipynb"


def test_tasks_imported_from_another_file(workdir: Path):
    """``meta.import_tasks_from``: the tasks come after the file's own, rendered with the same
    env, their file sources relative to the imported file; an ``environment.yml`` beside is
    not an env file."""
    _write(workdir / "environment.yml", "name: project\n")
    pipeline = _load(workdir, """
        meta:
          import_tasks_from: partial/features.yaml
        tasks:
          - source: fit.py
            product: '{{root}}/fit.ipynb'
        """, **{"fit.py": SCRIPT, "partial__get.py": SCRIPT, "env.yaml": "root: out\n",
                "partial__features.yaml": "- source: get.py\n  product: '{{root}}/get.ipynb'\n"})
    assert list(pipeline.tasks) == ["fit", "get"]
    assert pipeline.tasks["get"].notebook == workdir / "partial" / "get.py"
    assert pipeline.tasks["get"].product == "out/get.ipynb"


# -- validation in one pass, refusals --------------------------------------------------------

def test_validation_reports_every_problem_of_the_file_at_once(workdir: Path):
    problems = _problems(workdir, """
        tasks:
          - source: get.py
            product: '{{missing}}/get.ipynb'
          - source: tasks.clean
            product: out/clean.csv
            params: {size: 3}
            on_finish: hooks.wants_dag
          - source: report.py
            product: out/report.pdf
          - source: fit.py
            product: out/fit.ipynb
            on_failure: hooks.with_client
          - source: tasks.after
            product: out/after.csv
        """, **{"get.py": SCRIPT, "report.py": SCRIPT, "fit.py": SCRIPT,
                "tasks.py": "def clean(product, upstream):\n    upstream['get']\n\n"
                            "def after(product, upstream):\n    upstream['clean']\n",
                "hooks.py": "def wants_dag(dag):\n    pass\n\n"
                            "def with_client(client, product):\n    pass\n"})
    text = "\n".join(problems)
    assert "'missing' is undefined" in text
    assert "clean() takes no 'size' argument" in text
    assert "wants_dag() asks for 'dag'" in text
    assert "as PDF is not supported" in text
    assert "tasks' must be a list" not in text and "unknown upstream task" not in text
    assert "with_client" not in text  # a hook may take client (None for file products)
    assert len(problems) == 4, problems


def test_on_render_hooks_run_when_the_pipeline_is_read(workdir: Path):
    """Pipeline and task on_render hooks, with their arguments (dag; task, client, product,
    params) and the spec's, are called once the pipeline is read, as Ploomber calls them when
    it renders; one that raises is a validation problem."""
    hooks = """
        import json

        def dag_level(dag, my_param):
            open("dag.json", "w").write(json.dumps([repr(dag), list(dag), dag["get"].name,
                                                    my_param]))

        def task_level(task, client, product, params, my_param):
            open("task.json", "w").write(json.dumps([task.name, client, product, params,
                                                     my_param]))

        def broken(task):
            raise RuntimeError("not today")
        """
    spec = """
        on_render: {dotted_path: hooks.dag_level, my_param: 10}
        tasks:
          - source: get.py
            product: out/get.ipynb
            params: {rows: 3}
            on_render: {dotted_path: hooks.task_level, my_param: 20}
        """
    _load(workdir, spec, **{"get.py": SCRIPT, "hooks.py": hooks})
    assert json.loads((workdir / "dag.json").read_text()) == [
        f'DAG("{workdir.name}")', ["get"], "get", 10]
    product = str(workdir / "out" / "get.ipynb")
    assert json.loads((workdir / "task.json").read_text()) == [
        "get", None, product, {"rows": 3, "product": product}, 20]
    problems = _problems(workdir, spec.replace("hooks.task_level, my_param: 20",
                                               "hooks.broken"))
    assert problems == ["task 'get.py': on_render: hooks.broken() failed: "
                        "RuntimeError: not today"], problems


@pytest.mark.parametrize("case", ["factory", "python", "file_client", "serializer", "R"])
def test_what_is_not_supported_says_what_to_do(workdir: Path, case: str):
    specs = {
        "factory": ("location: pipeline.make\n", "'location' (pipeline.make) is not supported: "
                    "pipelines built by a Python factory"),
        "python": (None, "a pipeline built with Ploomber's Python API is not supported"),
        "file_client": ("clients:\n  File: clients.get_local\ntasks:\n  - source: get.py\n"
                        "    product: out/get.ipynb\n", "a File client copies each product"),
        "serializer": ("serializer: io.write\ntasks:\n  - source: tasks.make\n"
                       "    product: out/make.csv\n", "nborch does not call serializers"),
        "R": ("tasks:\n  - source: raw.R\n    product: out/raw.html\n", "R scripts are not run"),
    }
    spec, expected = specs[case]
    _write(workdir / "get.py", SCRIPT)
    _write(workdir / "tasks.py", "def make():\n    return 1\n")  # serialized: no product
    if spec is None:
        _write(workdir / "pipeline.py", "from ploomber import DAG\n\ndef make():\n    pass\n")
        target = "pipeline.py"
    else:
        _write(workdir / "pipeline.yaml", spec)
        target = "pipeline.yaml"
    proc = nborch("validate", target, cwd=workdir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "error:" in proc.stderr and " problems:" not in proc.stderr, proc.stderr  # only it


# -- running ---------------------------------------------------------------------------------

PROJECT = """
tasks:
  - source: scripts/load.py
    product:
      nb: products/{{timestamp}}/load.html
      data: products/{{timestamp}}/load.csv
    params:
      rows: {dotted_path: "params::rows", n: 3}
      fail: '{{fail}}'

  - source: tasks.fit
    name: fit-[[model]]-[[alpha]][[depth]]
    product: products/{{timestamp}}/fit/[[model]]-[[alpha]][[depth]].json
    grid:
      - model: linear
        alpha: params::alphas
      - model: [tree]
        depth: [2]
    on_finish: hooks.check

  - source: scripts/report.py
    product: products/{{timestamp}}/report.html

on_finish: hooks.done
"""

LOAD = """
# %% tags=["parameters"]
upstream = None
product = None
rows = None
fail = None

# %%
with open(product["data"], "w") as out:
    out.write(",".join(map(str, rows)))
assert not fail, "asked to fail"
"""

FIT = """
import json


def fit(product, upstream, model, alpha=None, depth=None):
    rows = open(upstream["load"]["data"]).read()
    with open(product, "w") as out:
        json.dump({"model": model, "alpha": alpha, "depth": depth, "rows": rows}, out)
"""

REPORT = """
# %% tags=["parameters"]
upstream = ["fit-*"]
product = None

# %%
for name, path in sorted(upstream["fit-*"].items()):
    print("FIT", name, open(path).read())
"""

HOOKS = """
import json


def done(dag, report):
    with open("done.txt", "w") as out:
        out.write(f"{sorted(dag)} {report}")


def check(product, client, task):
    with open(str(product) + ".hook", "w") as out:
        json.dump({"client": client, "task": task.name}, out)
"""


def _project(folder: Path) -> Path:
    _write(folder / "pipeline.yaml", PROJECT)
    _write(folder / "env.yaml", "timestamp: dev\nfail: false\n")
    _write(folder / "env.cron.yaml", "timestamp: '{{now}}'\nfail: false\n")
    _write(folder / "scripts" / "load.py", LOAD)
    _write(folder / "scripts" / "report.py", REPORT)
    _write(folder / "tasks.py", FIT)
    _write(folder / "hooks.py", HOOKS)
    _write(folder / "params.py", "def rows(n):\n    return list(range(n))\n\n"
                                 "def alphas():\n    return [0.1, 1]\n")
    return folder / "pipeline.yaml"


def test_a_ploomber_project_with_the_whole_grammar_runs_unchanged(workdir: Path):
    """Grid named by [[...]] (a list of grids, a single value, a computed one), computed
    params, an HTML report, a hook taking client, env-file switching: products where
    Ploomber writes them (checked once against ploomber build 0.23.3)."""
    project = workdir / "project"
    pipeline = _project(project)
    proc = nborch("run", str(pipeline), "--json", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MissingIDFieldWarning" not in proc.stderr
    tasks = run_json(proc)["tasks"]
    assert list(tasks) == ["load", "fit-linear-0.1", "fit-linear-1", "fit-tree-2", "report"]
    dev = project / "products" / "dev"
    assert (dev / "load.csv").read_text() == "0,1,2"
    fits = sorted(p.name for p in (dev / "fit").glob("*.json"))
    assert fits == ["linear-0.1-0.json", "linear-1-1.json", "tree-2-2.json"]
    assert json.loads((dev / "fit" / "tree-2-2.json").read_text())["depth"] == 2
    assert json.loads((dev / "fit" / "linear-1-1.json.hook").read_text()) == {
        "client": None, "task": "fit-linear-1"}
    html = (dev / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "FIT fit-tree-2" in html
    assert (dev / "load.html").is_file() and not (dev / "load.ipynb").exists()
    done = (project / "done.txt").read_text()
    assert done.startswith("['fit-linear-0.1', 'fit-linear-1', 'fit-tree-2', 'load', 'report']")
    assert ": success (" in done

    # the cron guide's switch: another env file, a folder per run named by {{now}}
    cron = nborch("run", str(pipeline), "--json", cwd=project,
                  env={"PLOOMBER_ENV_FILENAME": "env.cron.yaml"})
    assert cron.returncode == 0, cron.stdout + cron.stderr
    folders = [p.name for p in (project / "products").iterdir() if p.name != "dev"]
    assert len(folders) == 1 and re.fullmatch(NOW, folders[0]), folders

    # a failed run keeps the last good report and writes the partial notebook beside it
    good = (dev / "load.html").read_text()
    _write(project / "env.yaml", "timestamp: dev\nfail: true\n")
    failed = nborch("run", str(pipeline), "--json", cwd=project)
    assert failed.returncode == 1
    assert run_json(failed)["tasks"]["load"]["error"]["message"] == "asked to fail"
    assert (dev / "load.html").read_text() == good
    assert "asked to fail" in (dev / "load.ipynb").read_text()
    _write(project / "env.yaml", "timestamp: dev\nfail: false\n")
    assert nborch("run", str(pipeline), cwd=project).returncode == 0
    assert not (dev / "load.ipynb").exists()


def test_incremental_reruns_only_the_function_that_changed(workdir: Path):
    _write(workdir / "pipeline.yaml", """
        tasks:
          - source: tasks.one
            product: out/one.txt
          - source: tasks.two
            product: out/two.txt
        """)
    body = ("# helpers\n\ndef one(product):\n    open(product, 'w').write('1')\n\n\n"
            "def two(product):\n    open(product, 'w').write('2')\n")
    _write(workdir / "tasks.py", body)
    assert nborch("run", "pipeline.yaml", cwd=workdir).returncode == 0
    _write(workdir / "tasks.py", body.replace("# helpers", "# helpers, edited")
           .replace("write('2')", "write('2!')  # changed"))
    again = run_json(nborch("run", "pipeline.yaml", "--incremental", "--json", cwd=workdir,
                            check=True))["tasks"]
    assert again["one"]["status"] == "skipped"
    assert again["two"]["status"] == "success"
    assert (workdir / "out" / "two.txt").read_text() == "2!"
    # a second run without --incremental re-runs everything
    full = run_json(nborch("run", "pipeline.yaml", "--json", cwd=workdir, check=True))["tasks"]
    assert {t["status"] for t in full.values()} == {"success"}


def test_script_runner_and_markdown_reports(workdir: Path):
    """``class: ScriptRunner`` runs the script without an output notebook; an nb product
    ending in .md is exported by nbconvert's markdown exporter, as Ploomber does."""
    _write(workdir / "pipeline.yaml", """
        tasks:
          - source: download.py
            class: ScriptRunner
            product:
              data: data/out.csv
          - source: report.py
            product: reports/report.md
        """)
    _write(workdir / "download.py", '# %% tags=["parameters"]\nupstream = None\nproduct = None\n'
           '\n# %%\nimport os\nopen(product["data"], "w").write(os.getcwd())\n')
    _write(workdir / "report.py", '# %% tags=["parameters"]\nupstream = ["download"]\n'
           'product = None\n\n# %%\nprint("REPORT", open(upstream["download"]["data"]).read())\n')
    proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (workdir / "data" / "out.csv").read_text() == str(workdir)
    assert f"REPORT {workdir}" in (workdir / "reports" / "report.md").read_text()
