"""SPEC section 7: the bad-input catalogue, through the ``nborch`` command.

Every case must give exit code 2, a one-paragraph message on stderr that names the file
(the pipeline file or the notebook) and the thing at fault, no Python traceback, and
``nborch run`` must write nothing to the store (no ``.nborch`` folder appears).

``validate`` never starts a kernel, so every case runs through ``validate``, in this
process (the command's ``main``, so its exit code and its printing are the real ones); a
representative subset also goes through ``run``, the real command in a process of its own,
to check that nothing is written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import nborch, write_notebook, write_pipeline

PIPELINE = "sales_pipeline.yaml"  # a name no message would contain by accident
UNSET_SECRET = "NBORCH_TEST_SECRET_THAT_IS_NOT_SET"


@dataclass
class Case:
    args: list[str]                       # after the subcommand: the pipeline path, then options
    expect: list[str]                     # substrings the message must hold (file, culprit)
    any_of: list[list[str]] = field(default_factory=list)  # for each group, one must be present
    env: dict = field(default_factory=dict)


# -- building blocks ----------------------------------------------------------------------

def _notebooks(root: Path) -> dict[str, Path]:
    """Two good notebooks: ``a`` with typed parameters, ``b`` with a plain parameters cell."""
    a = write_notebook(root / "nb" / "a.ipynb", "print(n, region, rate)",
                       parameters="n = 5\nregion = 'eu'\nrate = 0.5")
    b = write_notebook(root / "nb" / "b.ipynb", "print(x)", parameters="x = 1")
    return {"a": a.resolve(), "b": b.resolve()}


def _spec(**tasks) -> dict:
    base = {"a": {"notebook": "nb/a.ipynb"}, "b": {"notebook": "nb/b.ipynb", "upstream": ["a"]}}
    base.update(tasks)
    return {"name": "sales", "tasks": base}


def _write(root: Path, spec: dict) -> list[str]:
    write_pipeline(root, spec, name=PIPELINE)
    return [PIPELINE]


def _raw(root: Path, text: str) -> list[str]:
    (root / PIPELINE).write_text(text, encoding="utf-8")
    return [PIPELINE]


def _rotations(*cycle: str) -> list[str]:
    """Every way to print the cycle ``cycle`` (run order) starting at one of its tasks."""
    n = len(cycle)
    return [" >> ".join([*cycle[i:], *cycle[:i], cycle[i]]) for i in range(n)]


# -- the cases ------------------------------------------------------------------------------

def case_cycle(root):
    _notebooks(root)
    spec = {"name": "sales", "tasks": {
        "a": {"notebook": "nb/a.ipynb", "upstream": ["c"]},
        "b": {"notebook": "nb/b.ipynb", "upstream": ["a"]},
        "c": {"notebook": "nb/b.ipynb", "upstream": ["b"]},
    }}
    # run order: a before b (b's upstream), b before c, c before a
    return Case(_write(root, spec), [PIPELINE, "cycle"], any_of=[_rotations("a", "b", "c")])


def case_self_upstream(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "upstream": ["b"]})),
                [PIPELINE, "'b'", "itself"])


def case_unknown_upstream(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "upstream": ["extrakt"]})),
                [PIPELINE, "'b'", "'extrakt'", "upstream"])


def case_duplicate_task_name(root):
    _notebooks(root)
    text = ("name: sales\n"            # 1
            "tasks:\n"                 # 2
            "  a:\n"                   # 3
            "    notebook: nb/a.ipynb\n"
            "  b:\n"                   # 5
            "    notebook: nb/b.ipynb\n"
            "  a:\n"                   # 7
            "    notebook: nb/b.ipynb\n")
    return Case(_raw(root, text), [PIPELINE, "duplicate", "'a'", "line 7", "line 3"])


def case_missing_notebook(root):
    _notebooks(root)
    missing = (root / "nb" / "missing.ipynb").resolve()
    return Case(_write(root, _spec(b={"notebook": "nb/missing.ipynb"})),
                [PIPELINE, str(missing), "'b'", "not found"])


def case_notebook_is_a_directory(root):
    _notebooks(root)
    folder = root / "nb" / "folder.ipynb"
    folder.mkdir()
    return Case(_write(root, _spec(b={"notebook": "nb/folder.ipynb"})),
                [PIPELINE, str(folder.resolve()), "'b'"])


def case_notebook_unreadable(root):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading "
                    "(the directory case covers an unreadable notebook)")
    paths = _notebooks(root)
    paths["b"].chmod(0)
    return Case(_write(root, _spec()), [PIPELINE, str(paths["b"]), "'b'"])


def case_notebook_plain_text(root):
    _notebooks(root)
    bad = root / "nb" / "text.ipynb"
    bad.write_text("this is not a notebook, just some words\n", encoding="utf-8")
    return Case(_write(root, _spec(b={"notebook": "nb/text.ipynb"})),
                [PIPELINE, str(bad.resolve()), "'b'", "not a valid notebook"])


def case_notebook_json_not_notebook(root):
    _notebooks(root)
    bad = root / "nb" / "data.ipynb"
    bad.write_text('{"hello": "world", "rows": [1, 2, 3]}\n', encoding="utf-8")
    return Case(_write(root, _spec(b={"notebook": "nb/data.ipynb"})),
                [PIPELINE, str(bad.resolve()), "'b'", "not a valid notebook"])


def case_notebook_json_list(root):
    _notebooks(root)
    bad = root / "nb" / "list.ipynb"
    bad.write_text("[1, 2, 3]\n", encoding="utf-8")
    return Case(_write(root, _spec(b={"notebook": "nb/list.ipynb"})),
                [PIPELINE, str(bad.resolve()), "'b'", "not a valid notebook"])


def case_notebook_bad_nbformat_schema(root):
    _notebooks(root)
    bad = root / "nb" / "schema.ipynb"
    bad.write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, '
                   '"cells": [{"cell_type": "code", "source": 42}]}\n', encoding="utf-8")
    return Case(_write(root, _spec(b={"notebook": "nb/schema.ipynb"})),
                [PIPELINE, str(bad.resolve()), "'b'", "not a valid notebook"])


def case_no_parameters_cell(root):
    _notebooks(root)
    plain = write_notebook(root / "nb" / "plain.ipynb", "x = 1").resolve()
    return Case(_write(root, _spec(b={"notebook": "nb/plain.ipynb", "parameters": {"x": 2}})),
                [PIPELINE, str(plain), "'b'", "parameters"])


def case_unknown_parameter(root):
    paths = _notebooks(root)
    return Case(_write(root, _spec(a={"notebook": "nb/a.ipynb", "parameters": {"colour": "red"}})),
                [PIPELINE, str(paths["a"]), "'a'", "'colour'"])


def case_bad_type_str_for_int(root):
    paths = _notebooks(root)
    return Case(_write(root, _spec(a={"notebook": "nb/a.ipynb", "parameters": {"n": "five"}})),
                [PIPELINE, str(paths["a"]), "'a'", "'n'", "five"])


def case_bad_type_list_for_str(root):
    paths = _notebooks(root)
    return Case(_write(root, _spec(a={"notebook": "nb/a.ipynb",
                                      "parameters": {"region": ["eu", "us"]}})),
                [PIPELINE, str(paths["a"]), "'a'", "'region'"])


def case_bad_type_from_template(root):
    """A pipeline parameter rendered natively into the task keeps its (wrong) type."""
    paths = _notebooks(root)
    spec = _spec(a={"notebook": "nb/a.ipynb", "parameters": {"n": "{{ params.size }}"}})
    spec["parameters"] = {"size": "big"}
    return Case(_write(root, spec), [PIPELINE, str(paths["a"]), "'a'", "'n'", "big"])


def case_invalid_yaml_mapping_value(root):
    _notebooks(root)
    text = ("name: sales\n"
            "tasks:\n"
            "  a:\n"
            "    notebook: nb/a.ipynb\n"
            "    parameters: n: 1\n")          # line 5
    return Case(_raw(root, text), [PIPELINE, "YAML", "line 5"])


def case_invalid_yaml_tab(root):
    _notebooks(root)
    text = "name: sales\ntasks:\n  a:\n\tnotebook: nb/a.ipynb\n"   # tab on line 4
    return Case(_raw(root, text), [PIPELINE, "YAML", "line 4"])


def case_invalid_yaml_unclosed_bracket(root):
    _notebooks(root)
    text = ("name: sales\n"
            "tasks:\n"
            "  a:\n"
            "    notebook: nb/a.ipynb\n"
            "  b:\n"
            "    notebook: nb/b.ipynb\n"
            "    upstream: [a\n"               # line 7
            "    retries: 1\n")
    # PyYAML notices at line 8; either the opening line or the line it notices is fine.
    return Case(_raw(root, text), [PIPELINE, "YAML"], any_of=[["line 7", "line 8"]])


def case_invalid_yaml_unclosed_quote(root):
    _notebooks(root)
    text = ("name: sales\n"
            "parameters:\n"
            "  region: \"eu\n"                 # line 3: the quote is never closed
            "tasks:\n"
            "  a:\n"
            "    notebook: nb/a.ipynb\n")
    # The only useful line is where the quoted scalar starts: the end of the file is
    # where the parser gives up, which tells the user nothing.
    return Case(_raw(root, text), [PIPELINE, "YAML", "line 3"])


def case_unknown_key_task(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "retires": 2})),
                [PIPELINE, "'retires'", "did you mean 'retries'", "'b'"])


def case_unknown_key_top_level(root):
    _notebooks(root)
    spec = {"name": "sales", "taks": {"a": {"notebook": "nb/a.ipynb"}}}
    return Case(_write(root, spec), [PIPELINE, "'taks'", "did you mean 'tasks'"])


def case_unknown_key_defaults(root):
    _notebooks(root)
    spec = _spec()
    spec["defaults"] = {"timout": "5m"}
    return Case(_write(root, spec), [PIPELINE, "'timout'", "did you mean 'timeout'"])


def case_unknown_key_schedule(root):
    _notebooks(root)
    spec = _spec()
    spec["schedule"] = {"cron": "0 6 * * *", "timezon": "UTC"}
    return Case(_write(root, spec), [PIPELINE, "'timezon'", "did you mean 'timezone'"])


def case_bad_cron_range(root):
    _notebooks(root)
    spec = _spec()
    spec["schedule"] = {"cron": "61 6 * * *"}
    return Case(_write(root, spec), [PIPELINE, "cron", "61 6 * * *"])


def case_bad_cron_words(root):
    _notebooks(root)
    spec = _spec()
    spec["schedule"] = {"cron": "every morning"}
    return Case(_write(root, spec), [PIPELINE, "cron", "every morning"])


def case_schedule_cron_and_after(root):
    _notebooks(root)
    spec = _spec()
    spec["schedule"] = {"cron": "0 6 * * *", "after": ["ingest"]}
    return Case(_write(root, spec), [PIPELINE, "'cron' or 'after', not both"])


def case_schedule_after_not_names(root):
    _notebooks(root)
    spec = _spec()
    spec["schedule"] = {"after": [{"pipeline": "ingest"}]}
    return Case(_write(root, spec), [PIPELINE, "'after' must be a pipeline name"])


def case_bad_sla(root):
    _notebooks(root)
    spec = _spec()
    spec["schedule"] = {"cron": "0 6 * * *", "sla": "an hour"}
    return Case(_write(root, spec), [PIPELINE, "sla", "duration", "an hour"])


def case_sla_miss_hook_under_a_task(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb",
                                      "on_sla_miss": [{"command": ["true"]}]})),
                [PIPELINE, "'b'", "'on_sla_miss'", "pipeline's top level"])


def case_unknown_key_sla_miss_hook(root):
    _notebooks(root)
    spec = _spec()
    spec["on_sla_mis"] = [{"command": ["true"]}]
    return Case(_write(root, spec), [PIPELINE, "'on_sla_mis'", "did you mean 'on_sla_miss'"])


def case_bad_duration_timeout(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "timeout": "10x"})),
                [PIPELINE, "'b'", "duration", "10x"])


def case_bad_duration_retry_delay(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "retry_delay": "soon"})),
                [PIPELINE, "'b'", "duration", "soon"])


def case_bad_duration_in_defaults(root):
    _notebooks(root)
    spec = _spec()
    spec["defaults"] = {"timeout": "10x"}
    return Case(_write(root, spec), [PIPELINE, "defaults", "duration", "10x"])


def case_task_name_slash(root):
    _notebooks(root)
    return Case(_write(root, _spec(**{"sub/task": {"notebook": "nb/b.ipynb"}})),
                [PIPELINE, "sub/task"])


def case_task_name_backslash(root):
    _notebooks(root)
    return Case(_write(root, _spec(**{"sub\\task": {"notebook": "nb/b.ipynb"}})),
                [PIPELINE], any_of=[["'sub\\\\task'", "sub\\task"]])


def case_task_name_dotdot(root):
    _notebooks(root)
    return Case(_write(root, _spec(**{"..": {"notebook": "nb/b.ipynb"}})),
                [PIPELINE, "'..'"])


def case_task_name_dotdot_inside(root):
    _notebooks(root)
    return Case(_write(root, _spec(**{"up..out": {"notebook": "nb/b.ipynb"}})),
                [PIPELINE, "'up..out'"])


def case_notebook_and_command(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "command": ["echo", "hi"]})),
                [PIPELINE, "'b'", "notebook", "command"])


def case_neither_notebook_nor_command(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"upstream": ["a"], "retries": 1})),
                [PIPELINE, "'b'", "notebook", "command"])


def case_product_named_notebook(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb",
                                      "product": {"notebook": "out/b.ipynb"}})),
                [PIPELINE, "'b'", "'notebook'", "product"])


def case_product_named_values(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"command": ["true"], "product": {"values": "v.json"}})),
                [PIPELINE, "'b'", "'values'", "product"])


def case_product_not_a_path(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "product": ["a.csv"]})),
                [PIPELINE, "'b'", "product"])


def case_two_tasks_one_product(root):
    _notebooks(root)
    return Case(_write(root, _spec(a={"notebook": "nb/a.ipynb", "product": "out/x.csv"},
                                   b={"command": ["true"], "product": "out/x.csv"})),
                [PIPELINE, "'a'", "'b'", "x.csv"])


def case_command_as_string(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"command": "echo hi && rm -rf /"})),
                [PIPELINE, "'b'", "command", "list"])


def case_command_program_missing(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"command": ["nborch-no-such-program", "--x"]})),
                [PIPELINE, "'b'", "'nborch-no-such-program'", "not found"])


def case_command_with_parameters(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"command": ["true"], "parameters": {"x": 1}})),
                [PIPELINE, "'b'", "'parameters'", "command"])


def case_command_bad_template(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"command": ["echo", "{{ params.nope }}"]})),
                [PIPELINE, "'b'", "nope"])


def case_missing_secret_task(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "secrets": [UNSET_SECRET]})),
                [PIPELINE, UNSET_SECRET, "'b'"])


def case_missing_secret_pipeline(root):
    _notebooks(root)
    spec = _spec()
    spec["secrets"] = [UNSET_SECRET]
    return Case(_write(root, spec), [PIPELINE, UNSET_SECRET])


def case_undeclared_cli_param(root):
    _notebooks(root)
    spec = _spec()
    spec["parameters"] = {"region": "eu"}
    return Case([*_write(root, spec), "-p", "regoin=us"], [PIPELINE, "'regoin'", "-p"])


def case_undefined_template_name(root):
    _notebooks(root)
    spec = _spec(a={"notebook": "nb/a.ipynb", "parameters": {"region": "{{ params.nope }}"}})
    spec["parameters"] = {"size": 1}
    return Case(_write(root, spec), [PIPELINE, "'a'", "nope"])


def case_undefined_template_name_in_text(root):
    _notebooks(root)
    spec = _spec(a={"notebook": "nb/a.ipynb", "parameters": {"region": "r-{{ regoin }}"}})
    return Case(_write(root, spec), [PIPELINE, "'a'", "regoin"])


def case_bad_trigger_rule(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "upstream": ["a"],
                                      "trigger": "any_success"})),
                [PIPELINE, "'b'", "any_success", "trigger"])


def case_kernel_not_installed(root):
    _notebooks(root)
    return Case(_write(root, _spec(b={"notebook": "nb/b.ipynb", "kernel": "no-such-kernel-xyz"})),
                [PIPELINE, "'b'", "no-such-kernel-xyz"])


def case_unknown_executor(root):
    _notebooks(root)
    return Case(_write(root, {**_spec(), "executor": "k8s://cluster:443"}),
                [PIPELINE, "unknown executor 'k8s'", "local, dask", "dask://HOST:PORT"])


def case_executor_without_address(root):
    _notebooks(root)
    return Case(_write(root, {**_spec(), "executor": "dask://"}),
                [PIPELINE, "'dask://'", "no address", "local, dask"])


def case_executor_not_a_name(root):
    _notebooks(root)
    return Case(_write(root, {**_spec(), "executor": 8786}),
                [PIPELINE, "executor must be a name", "8786"])


CASES: dict[str, Callable[[Path], Case]] = {
    name[len("case_"):]: fn for name, fn in list(globals().items()) if name.startswith("case_")
}
RUN_SUBSET = ["cycle", "unknown_parameter", "missing_secret_task", "bad_type_str_for_int",
              "missing_notebook", "undeclared_cli_param", "invalid_yaml_mapping_value",
              "unknown_executor"]


# -- the checks -----------------------------------------------------------------------------

def _env(case: Case) -> dict:
    os.environ.pop(UNSET_SECRET, None)
    return case.env


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def _validate_in_process(case: Case, monkeypatch, capsys) -> Outcome:
    """``nborch validate`` through the command's own ``main`` in this process: the catalogue
    in seconds (``run`` below still goes through the real command, a process each)."""
    from nborch.ui import cli
    for key, value in _env(case).items():
        monkeypatch.setenv(key, value)
    stdout = sys.stdout
    try:
        code = cli.main(["validate", *case.args])
    finally:
        sys.stdout = stdout  # main guards stdout against a closed pipe
    out = capsys.readouterr()
    return Outcome(code, out.out, out.err)


def _check_message(proc, case: Case, command: str) -> None:
    err = proc.stderr
    context = f"nborch {command} {' '.join(case.args)}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert proc.returncode == 2, context
    assert "Traceback" not in err, context
    assert err.strip(), context
    # one paragraph: no blank line inside the message
    assert "\n\n" not in err.strip(), context
    for needle in case.expect:
        assert needle in err, f"{needle!r} missing from the message\n{context}"
    for group in case.any_of:
        assert any(n in err for n in group), f"none of {group!r} in the message\n{context}"


@pytest.mark.parametrize("name", list(CASES))
def test_validate_rejects(name, workdir, monkeypatch, capsys):
    case = CASES[name](workdir)
    proc = _validate_in_process(case, monkeypatch, capsys)
    _check_message(proc, case, "validate")
    assert "is valid" not in proc.stdout
    assert not (workdir / ".nborch").exists()


@pytest.mark.parametrize("name", RUN_SUBSET)
def test_run_rejects_and_writes_nothing(name, workdir):
    case = CASES[name](workdir)
    proc = nborch("run", *case.args, cwd=workdir, env=_env(case), timeout=60)
    _check_message(proc, case, "run")
    assert "started" not in proc.stdout
    assert not (workdir / ".nborch").exists(), sorted(
        str(p.relative_to(workdir)) for p in (workdir / ".nborch").rglob("*"))


# -- the good twins: the same files without the fault pass --------------------------------

def test_baseline_pipeline_is_valid(workdir):
    _notebooks(workdir)
    spec = _spec(a={"notebook": "nb/a.ipynb",
                    "parameters": {"n": 7, "region": "{{ params.region }}", "rate": 0.25}},
                 b={"notebook": "nb/b.ipynb", "upstream": ["a"], "retries": 1,
                    "timeout": "10m", "retry_delay": "5s", "trigger": "all_done",
                    "kernel": "python3"})
    spec["parameters"] = {"region": "eu"}
    spec["schedule"] = {"cron": "0 6 * * *", "timezone": "Europe/Berlin"}
    write_pipeline(workdir, spec, name=PIPELINE)
    proc = nborch("validate", PIPELINE, "-p", "region=us", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    assert not (workdir / ".nborch").exists()


def test_int_for_float_default_is_accepted(workdir):
    _notebooks(workdir)
    write_pipeline(workdir, _spec(a={"notebook": "nb/a.ipynb", "parameters": {"rate": 2}}),
                   name=PIPELINE)
    proc = nborch("validate", PIPELINE, cwd=workdir)
    assert proc.returncode == 0, proc.stderr


# -- several problems, one message ----------------------------------------------------------

def _assert_all(proc, needles):
    err = proc.stderr
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    assert "\n\n" not in err.strip(), err
    for needle in needles:
        assert needle in err, f"{needle!r} missing from the message:\n{err}"


def test_several_task_problems_in_one_message(workdir):
    _notebooks(workdir)
    spec = {"name": "sales", "tasks": {
        "a": {"notebook": "nb/a.ipynb", "retires": 2},               # typo in a task
        "b": {"notebook": "nb/b.ipynb", "timeout": "10x"},           # bad duration
        "c": {"notebook": "nb/b.ipynb", "trigger": "any_success"},   # bad trigger
        "d/e": {"notebook": "nb/b.ipynb"},                           # path separator
        "f": {"notebook": "nb/b.ipynb", "command": ["true"]},        # both
        "g": {"upstream": ["a"]},                                    # neither
    }}
    write_pipeline(workdir, spec, name=PIPELINE)
    proc = nborch("validate", PIPELINE, cwd=workdir)
    _assert_all(proc, [PIPELINE, "'retires'", "did you mean 'retries'", "'b'", "10x", "'c'",
                       "any_success", "'d/e'", "'f'", "'g'"])


def test_several_top_level_problems_in_one_message(workdir):
    _notebooks(workdir)
    spec = _spec()
    spec["paramters"] = {"region": "eu"}                 # typo at top level
    spec["defaults"] = {"timout": "5m"}                  # typo in defaults
    spec["schedule"] = {"cron": "61 6 * * *"}            # bad cron
    write_pipeline(workdir, spec, name=PIPELINE)
    proc = nborch("validate", PIPELINE, cwd=workdir)
    _assert_all(proc, [PIPELINE, "'paramters'", "did you mean 'parameters'", "'timout'",
                       "did you mean 'timeout'", "61 6 * * *"])


def test_top_level_defaults_and_task_problems_in_one_message(workdir):
    """Problems at every level of one file come back together, not one level per attempt."""
    _notebooks(workdir)
    spec = {
        "name": "sales",
        "paramters": {"region": "eu"},                                   # typo at top level
        "defaults": {"retry_delay": "soon"},                             # bad duration
        "tasks": {
            "a": {"notebook": "nb/a.ipynb", "retires": 2},               # typo in a task
            "b": {"notebook": "nb/b.ipynb", "timeout": "10x"},           # bad duration
        },
    }
    write_pipeline(workdir, spec, name=PIPELINE)
    proc = nborch("validate", PIPELINE, cwd=workdir)
    _assert_all(proc, [PIPELINE, "'paramters'", "soon", "'retires'", "10x"])


def test_several_graph_and_notebook_problems_in_one_message(workdir):
    paths = _notebooks(workdir)
    spec = {"name": "sales", "tasks": {
        "a": {"notebook": "nb/a.ipynb"},
        "b": {"notebook": "nb/missing.ipynb", "upstream": ["a"]},
        "c": {"notebook": "nb/b.ipynb", "upstream": ["nope"]},
    }}
    write_pipeline(workdir, spec, name=PIPELINE)
    proc = nborch("validate", PIPELINE, cwd=workdir)
    _assert_all(proc, [PIPELINE, str(paths["a"].parent / "missing.ipynb"), "'nope'", "'c'"])


def test_several_validation_problems_in_one_message(workdir):
    paths = _notebooks(workdir)
    spec = {"name": "sales", "parameters": {"size": 3}, "tasks": {
        "a": {"notebook": "nb/a.ipynb", "parameters": {"colour": "red", "n": "five"}},
        "b": {"notebook": "nb/b.ipynb", "parameters": {"x": "{{ params.nope }}"}},
        "c": {"notebook": "nb/b.ipynb", "secrets": [UNSET_SECRET]},
        "d": {"notebook": "nb/b.ipynb", "kernel": "no-such-kernel-xyz"},
    }}
    write_pipeline(workdir, spec, name=PIPELINE)
    os.environ.pop(UNSET_SECRET, None)
    proc = nborch("run", PIPELINE, cwd=workdir, timeout=60)
    _assert_all(proc, [PIPELINE, str(paths["a"]), "'colour'", "'n'", "nope", UNSET_SECRET,
                       "no-such-kernel-xyz"])
    assert not (workdir / ".nborch").exists()


def test_notebook_and_parameter_problems_in_one_message(workdir):
    """A missing notebook in one task does not hide a bad parameter in another."""
    paths = _notebooks(workdir)
    spec = {"name": "sales", "tasks": {
        "a": {"notebook": "nb/a.ipynb", "parameters": {"colour": "red"}},
        "b": {"notebook": "nb/missing.ipynb"},
    }}
    write_pipeline(workdir, spec, name=PIPELINE)
    proc = nborch("validate", PIPELINE, cwd=workdir)
    _assert_all(proc, [PIPELINE, str(paths["a"].parent / "missing.ipynb"), "'colour'"])


def test_bad_durations_of_a_hook_and_the_scheduler_are_exit_2(workdir):
    write_notebook(workdir / "a.ipynb", "pass")
    write_pipeline(workdir, {"name": "d", "tasks": {"a": {"notebook": "a.ipynb"}},
                             "on_failure": [{"webhook": "http://127.0.0.1:9/x",
                                             "timeout": "soon"}]}, name=PIPELINE)
    for proc, words in ((nborch("validate", PIPELINE, cwd=workdir), ["timeout", "soon"]),
                        (nborch("scheduler", "--grace", "abc", cwd=workdir), ["--grace", "abc"])):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert all(w in proc.stderr for w in words), proc.stderr
