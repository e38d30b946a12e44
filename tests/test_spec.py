"""Unit tests of ``nborch.spec.loader`` (YAML to Pipeline), the ``Pipeline`` Python API, and the
pure task state machine ``nborch.core.planner.Planner``. No kernels, no subprocesses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import write_notebook

from nborch import Pipeline
from nborch.core.errors import SpecError, ValidationError
from nborch.core.planner import Planner
from nborch.core.task import Task
from nborch.spec.loader import from_mapping, load, load_yaml
from nborch.spec.yamltext import parse_scalar, parse_yaml_text


def _yaml(folder: Path, text: str, name: str = "pipeline.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# =============================================================================================
# nborch.spec.loader: YAML
# =============================================================================================

def test_dates_in_yaml_stay_strings(tmp_path):
    path = _yaml(tmp_path, """\
        name: daily
        parameters:
          day: 2026-01-01
          when: 2026-01-01 06:00:00
        tasks:
          extract:
            notebook: extract.ipynb
            parameters: {day: 2026-01-01, nested: {d: 2026-02-03}, days: [2026-01-01]}
        """)
    p = load_yaml(path)
    assert p.parameters == {"day": "2026-01-01", "when": "2026-01-01 06:00:00"}
    assert p.tasks["extract"].parameters == {"day": "2026-01-01", "nested": {"d": "2026-02-03"},
                                             "days": ["2026-01-01"]}


def test_other_yaml_scalars_keep_their_types(tmp_path):
    path = _yaml(tmp_path, """\
        name: typed
        parameters: {n: 4, rate: 0.5, flag: true, empty: null, text: eu}
        tasks:
          a: {notebook: a.ipynb}
        """)
    assert load_yaml(path).parameters == {"n": 4, "rate": 0.5, "flag": True, "empty": None,
                                          "text": "eu"}


@pytest.mark.parametrize("text, value", [
    ("4", 4),
    ("-3", -3),
    ("1.5", 1.5),
    ("true", True),
    ("false", False),
    ("eu", "eu"),
    ("2026-01-01", "2026-01-01"),
    ("'4'", "4"),
    ('"true"', "true"),
    ("null", None),
    ("hello world", "hello world"),
    ("[1, 2]", "[1, 2]"),          # not a scalar: kept as the text given
    ("{a: 1}", "{a: 1}"),
    ("a: b", "a: b"),
    ("- a", "- a"),
    ("[unclosed", "[unclosed"),    # not YAML at all: the text given
    ("s3://bucket/key", "s3://bucket/key"),
])
def test_parse_scalar(text, value):
    result = parse_scalar(text)
    assert result == value
    assert type(result) is type(value)


def test_relative_paths_are_resolved_against_the_yaml_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    path = _yaml(project, """\
        name: daily
        tasks:
          extract: {notebook: notebooks/extract.ipynb, cwd: work}
          clean: {notebook: ./notebooks/../notebooks/clean.ipynb}
          report: {notebook: ../shared/report.ipynb}
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    p = load(Path("..") / "project" / "pipeline.yaml")
    root = project.resolve()
    assert p.source == path.resolve()
    assert p.root == root
    assert p.tasks["extract"].notebook == root / "notebooks" / "extract.ipynb"
    assert p.tasks["clean"].notebook == root / "notebooks" / "clean.ipynb"
    assert p.tasks["report"].notebook == tmp_path.resolve() / "shared" / "report.ipynb"
    assert all(t.notebook.is_absolute() for t in p.tasks.values())
    # cwd: relative to the pipeline file; without it, the notebook's folder
    assert p.tasks["extract"].cwd == root / "work"
    assert p.tasks["extract"].workdir == root / "work"
    assert p.tasks["clean"].cwd is None
    assert p.tasks["clean"].workdir == root / "notebooks"


def test_absolute_notebook_paths_are_kept(tmp_path):
    nb = (tmp_path / "abs" / "x.ipynb").resolve()
    p = from_mapping({"name": "p", "tasks": {"x": {"notebook": str(nb)}}},
                     source=tmp_path / "sub" / "p.yaml")
    assert p.tasks["x"].notebook == nb


def test_defaults_apply_to_every_task_and_tasks_override_them(tmp_path):
    path = _yaml(tmp_path, """\
        name: daily
        defaults:
          retries: 2
          retry_delay: 10s
          retry_backoff: exponential
          max_retry_delay: 5m
          timeout: 30m
          kernel: python3
          trigger: all_done
          env: {A: "1"}
        tasks:
          extract:
            notebook: extract.ipynb
          report:
            notebook: report.ipynb
            upstream: [extract]
            retries: 0
            timeout: 90
            retry_delay: 1h30m
            retry_backoff: constant
            kernel: ir
            trigger: all_success
        """)
    p = load_yaml(path)
    extract, report = p.tasks["extract"], p.tasks["report"]
    assert (extract.retries, extract.retry_delay, extract.retry_backoff, extract.max_retry_delay,
            extract.timeout, extract.kernel, extract.trigger, extract.env) == \
        (2, 10.0, "exponential", 300.0, 1800.0, "python3", "all_done", {"A": "1"})
    assert (report.retries, report.retry_delay, report.retry_backoff, report.max_retry_delay,
            report.timeout, report.kernel, report.trigger) == \
        (0, 5400.0, "constant", 300.0, 90.0, "ir", "all_success")


def test_builtin_task_defaults_without_a_defaults_section(tmp_path):
    p = load_yaml(_yaml(tmp_path, "name: p\ntasks:\n  a: {notebook: a.ipynb}\n"))
    a = p.tasks["a"]
    assert (a.retries, a.retry_backoff, a.timeout, a.kernel, a.trigger, a.upstream, a.parameters) \
        == (0, "constant", None, None, "all_success", (), {})


def test_pipeline_and_task_secrets_are_merged(tmp_path):
    p = load_yaml(_yaml(tmp_path, """\
        name: p
        secrets: [WAREHOUSE_URL]
        tasks:
          a: {notebook: a.ipynb}
          b: {notebook: b.ipynb, secrets: [API_TOKEN, WAREHOUSE_URL]}
        """))
    assert p.tasks["a"].secrets == ("WAREHOUSE_URL",)
    assert p.tasks["b"].secrets == ("WAREHOUSE_URL", "API_TOKEN")


def test_upstream_may_be_a_single_name(tmp_path):
    p = load_yaml(_yaml(tmp_path, """\
        name: p
        tasks:
          a: {notebook: a.ipynb}
          b: {notebook: b.ipynb, upstream: a}
        """))
    assert p.tasks["b"].upstream == ("a",)


def test_task_order_follows_the_file(tmp_path):
    p = load_yaml(_yaml(tmp_path, """\
        name: p
        tasks:
          zeta: {notebook: z.ipynb}
          alpha: {notebook: a.ipynb}
          mid: {notebook: m.ipynb, upstream: [zeta]}
        """))
    assert list(p.tasks) == ["zeta", "alpha", "mid"]


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(SpecError) as info:
        parse_yaml_text("name: p\ntasks:\n  a:\n    notebook: a.ipynb\n    parameters: x: 1\n",
                        "p.yaml")
    assert "line 5" in str(info.value)
    assert str(info.value).startswith("p.yaml: ")


def test_duplicate_keys_are_errors_with_both_lines(tmp_path):
    text = ("name: p\ntasks:\n  a: {notebook: a.ipynb}\n  b: {notebook: b.ipynb}\n"
            "  a: {notebook: c.ipynb}\n")
    with pytest.raises(SpecError) as info:
        parse_yaml_text(text, "p.yaml")
    message = str(info.value)
    assert "duplicate" in message and "'a'" in message
    assert "line 5" in message and "line 3" in message


def test_duplicate_keys_inside_a_task_are_errors():
    with pytest.raises(SpecError, match="duplicate key 'retries'"):
        parse_yaml_text("name: p\ntasks:\n  a:\n    notebook: a.ipynb\n    retries: 1\n"
                        "    retries: 2\n", "p.yaml")


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value) and "not found" in str(info.value)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n", "42\n"])
def test_a_pipeline_file_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_yaml(path)
    assert str(path) in str(info.value)


def test_unknown_keys_suggest_the_closest_known_key(tmp_path):
    with pytest.raises(SpecError) as info:
        load_yaml(_yaml(tmp_path, """\
            name: p
            paramters: {a: 1}
            tasks:
              a: {notebook: a.ipynb}
            """))
    message = str(info.value)
    assert "'paramters'" in message and "did you mean 'parameters'" in message
    assert "(line 2)" in message  # where 'paramters' is
    with pytest.raises(SpecError) as info:
        load_yaml(_yaml(tmp_path, """\
            name: p
            tasks:
              a: {notebook: a.ipynb, retires: 2, upstrem: []}
            """))
    message = str(info.value)
    assert "did you mean 'retries'" in message
    assert "did you mean 'upstream'" in message


def test_unknown_keys_far_from_any_known_key_list_the_known_keys(tmp_path):
    with pytest.raises(SpecError) as info:
        load_yaml(_yaml(tmp_path, "name: p\ntasks:\n  a: {notebook: a.ipynb, zzzzqqq: 1}\n"))
    assert "'zzzzqqq'" in str(info.value) and "retries" in str(info.value)


def test_spec_errors_carry_every_problem(tmp_path):
    with pytest.raises(SpecError) as info:
        load_yaml(_yaml(tmp_path, """\
            name: p
            tasks:
              a: {notebook: a.ipynb, timeout: 10x}
              b: {notebook: b.ipynb, trigger: sometimes}
              c/d: {notebook: c.ipynb}
            """))
    assert len(info.value.problems) == 3
    assert "3 problems" in str(info.value)


# =============================================================================================
# Pipeline: the Python API
# =============================================================================================

def test_python_api_builds_the_documented_example(workdir):
    p = Pipeline("daily_sales", retries=2)
    extract = p.notebook("notebooks/extract.ipynb", parameters={"day": "2026-01-01"})
    clean = p.notebook("notebooks/clean.ipynb", upstream=[extract])
    report = p.notebook("notebooks/report.ipynb", upstream=[clean])
    assert list(p.tasks) == ["extract", "clean", "report"]
    assert isinstance(extract, Task)
    assert extract.name == "extract"
    assert extract.notebook == (workdir / "notebooks" / "extract.ipynb").resolve()
    assert extract.parameters == {"day": "2026-01-01"}
    assert clean.upstream == ("extract",)
    assert report.upstream == ("clean",)
    assert all(t.retries == 2 for t in p.tasks.values())
    assert p.root == workdir.resolve()


def test_task_name_defaults_to_the_file_stem(workdir):
    p = Pipeline("p")
    assert p.notebook("a/b/load_data.ipynb").name == "load_data"
    assert p.notebook("script.py").name == "script"
    assert p.notebook("x.ipynb", name="custom").name == "custom"


def test_duplicate_task_names_are_rejected(workdir):
    p = Pipeline("p")
    p.notebook("one/extract.ipynb")
    with pytest.raises(SpecError, match="duplicate task name 'extract'"):
        p.notebook("two/extract.ipynb")
    with pytest.raises(SpecError, match="duplicate task name 'extract'"):
        p.notebook("other.ipynb", name="extract")
    p.notebook("two/extract.ipynb", name="extract2")  # a name= tells them apart
    assert list(p.tasks) == ["extract", "extract2"]


def test_upstream_as_task_objects_names_or_both(workdir):
    p = Pipeline("p")
    a = p.notebook("a.ipynb")
    b = p.notebook("b.ipynb")
    c = p.notebook("c.ipynb", upstream=[a, "b"])
    d = p.notebook("d.ipynb", upstream=("c",))
    e = p.notebook("e.ipynb", upstream=iter([b, c]))
    assert c.upstream == ("a", "b")
    assert d.upstream == ("c",)
    assert e.upstream == ("b", "c")


def test_python_api_options_are_checked(workdir):
    with pytest.raises(SpecError):
        Pipeline("bad name")
    with pytest.raises(SpecError):
        Pipeline("p", retires=2)
    with pytest.raises(SpecError):
        Pipeline("p", timeout="10x")
    p = Pipeline("p")
    with pytest.raises(SpecError):
        p.notebook("a.ipynb", retires=1)
    with pytest.raises(SpecError):
        p.notebook("a.ipynb", retries=-1)
    with pytest.raises(SpecError):
        p.notebook("a.ipynb", trigger="any_success")
    with pytest.raises(SpecError):
        p.notebook("a.ipynb", name="../escape")
    with pytest.raises(SpecError):
        p.notebook("a.ipynb", name="sub/a")
    assert p.tasks == {}


def test_python_api_defaults_and_overrides(workdir):
    p = Pipeline("p", retries=3, retry_delay="5m", timeout=60)
    a = p.notebook("a.ipynb")
    b = p.notebook("b.ipynb", retries=0, retry_delay="500ms")
    assert (a.retries, a.retry_delay, a.timeout) == (3, 300.0, 60.0)
    assert (b.retries, b.retry_delay, b.timeout) == (0, 0.5, 60.0)


def test_python_api_root_makes_paths_relative_to_it(workdir):
    p = Pipeline("p", root=workdir / "proj")
    assert p.notebook("nb/a.ipynb").notebook == (workdir / "proj" / "nb" / "a.ipynb").resolve()


def test_from_yaml_is_load_yaml(tmp_path):
    path = _yaml(tmp_path, "name: p\ntasks:\n  a: {notebook: a.ipynb}\n")
    p = Pipeline.from_yaml(path)
    assert isinstance(p, Pipeline)
    assert p.name == "p" and list(p.tasks) == ["a"]


def test_python_api_validate_reports_graph_problems(workdir):
    write_notebook(workdir / "a.ipynb", "pass", parameters="x = 1")
    write_notebook(workdir / "b.ipynb", "pass", parameters="x = 1")
    p = Pipeline("p")
    p.notebook("a.ipynb", upstream=["b"])
    p.notebook("b.ipynb", upstream=["a"])
    with pytest.raises(ValidationError, match="cycle"):
        p.validate()
    q = Pipeline("q")
    q.notebook("a.ipynb", upstream=["nope"])
    with pytest.raises(ValidationError, match="'nope'"):
        q.validate()
    ok = Pipeline("ok")
    ok.notebook("a.ipynb", parameters={"x": 2})
    ok.notebook("b.ipynb", upstream=["a"])
    ok.validate()
    assert not (workdir / ".nborch").exists()


# =============================================================================================
# Planner: the pure task state machine
# =============================================================================================

def T(name: str, *upstream: str, **options) -> Task:
    return Task(name=name, notebook=Path(f"/nb/{name}.ipynb"), upstream=upstream, **options)


def tasks(*items: Task) -> dict[str, Task]:
    return {t.name: t for t in items}


def drive(planner: Planner, fails: dict[str, int] | None = None, limit: int = 1000) -> list[str]:
    """Run the planner to the end like an engine with unlimited slots and instant tasks.

    ``fails[name]`` is how many attempts of ``name`` fail before one succeeds (a large
    number: always fails). Time jumps to the next retry when nothing is runnable.
    Returns the names started, in order (one entry per attempt).
    """
    fails = dict(fails or {})
    now, started = 0.0, []
    for _ in range(limit):
        planner.advance(now)
        if planner.done:
            return started
        ready = planner.queued()
        if not ready:
            wake = planner.next_wakeup()
            assert wake is not None, f"stuck: {planner.state}"
            now = max(now, wake)
            continue
        for name in ready:
            planner.start(name)
            started.append(name)
            ok = fails.get(name, 0) <= 0
            fails[name] = fails.get(name, 0) - 1
            planner.finish(name, ok, now)
    raise AssertionError("planner did not finish")


def test_a_chain_runs_in_order():
    planner = Planner(tasks(T("c", "b"), T("b", "a"), T("a")))
    moves = planner.advance(0)
    assert [(m.task, m.state) for m in moves] == [("a", "queued")]
    assert planner.queued() == ["a"]
    assert planner.state == {"c": "pending", "b": "pending", "a": "queued"}
    planner.start("a")
    assert planner.advance(0) == []          # b waits while a runs
    assert planner.finish("a", True, 1)[0].state == "success"
    assert [(m.task, m.state) for m in planner.advance(1)] == [("b", "queued")]
    planner.start("b")
    planner.finish("b", True, 2)
    planner.advance(2)
    assert planner.queued() == ["c"]


def test_drive_orders_a_diamond_and_succeeds():
    planner = Planner(tasks(T("a"), T("b", "a"), T("c", "a"), T("d", "b", "c")))
    order = drive(planner)
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]
    assert planner.done and planner.run_status() == "success"
    assert set(planner.state.values()) == {"success"}


def test_start_counts_attempts():
    planner = Planner(tasks(T("a", retries=1, retry_delay=0)))
    planner.advance(0)
    assert planner.start("a").attempt == 1
    assert planner.finish("a", False, 0)[0].state == "retrying"
    planner.advance(0)
    assert planner.start("a").attempt == 2


def test_all_success_propagates_upstream_failed():
    planner = Planner(tasks(T("a"), T("b", "a"), T("c", "b"), T("d", "a", "x"), T("x")))
    planner.advance(0)
    planner.start("a")
    planner.start("x")
    assert [(m.task, m.state) for m in planner.finish("a", False, 1)] == [("a", "failed")]
    moves = {m.task: m for m in planner.advance(1)}
    assert moves["b"].state == "upstream_failed" and "a" in moves["b"].reason
    assert moves["c"].state == "upstream_failed" and "b" in moves["c"].reason  # transitively
    assert "d" not in moves                          # still waits for x
    planner.finish("x", True, 2)
    assert {m.task: m.state for m in planner.advance(2)} == {"d": "upstream_failed"}
    assert planner.done and planner.run_status() == "failed"


def test_independent_branches_go_on_after_a_failure():
    planner = Planner(tasks(T("a"), T("b", "a"), T("x"), T("y", "x")))
    drive(planner, fails={"a": 99})
    assert planner.state == {"a": "failed", "b": "upstream_failed", "x": "success",
                             "y": "success"}
    assert planner.run_status() == "failed"


@pytest.mark.parametrize("a_fails, expected", [(False, "success"), (True, "success")])
def test_all_done_runs_whatever_happened_upstream(a_fails, expected):
    planner = Planner(tasks(T("a"), T("b", "a"), T("notify", "b", "a", trigger="all_done")))
    order = drive(planner, fails={"a": 99} if a_fails else {})
    assert order[-1] == "notify"
    assert planner.state["notify"] == expected
    assert planner.state["b"] == ("upstream_failed" if a_fails else "success")


def test_all_done_waits_for_every_upstream():
    planner = Planner(tasks(T("a"), T("slow"), T("notify", "a", "slow", trigger="all_done")))
    planner.advance(0)
    planner.start("a")
    planner.start("slow")
    planner.finish("a", False, 1)
    planner.advance(1)
    assert planner.state["notify"] == "pending"
    planner.finish("slow", True, 2)
    planner.advance(2)
    assert planner.state["notify"] == "queued"


def test_one_failed_runs_when_an_upstream_failed():
    planner = Planner(tasks(T("a"), T("slow"), T("alert", "a", "slow", trigger="one_failed")))
    planner.advance(0)
    planner.start("a")
    planner.start("slow")
    planner.finish("a", False, 1)
    planner.advance(1)
    assert planner.state["alert"] == "queued"      # at once, without waiting for 'slow'


def test_one_failed_runs_on_upstream_failed_too():
    planner = Planner(tasks(T("a"), T("b", "a"), T("alert", "b", trigger="one_failed")))
    drive(planner, fails={"a": 99})
    assert planner.state == {"a": "failed", "b": "upstream_failed", "alert": "success"}


def test_one_failed_is_skipped_when_nothing_failed():
    planner = Planner(tasks(T("a"), T("b"), T("alert", "a", "b", trigger="one_failed"),
                            T("after", "alert")))
    order = drive(planner)
    assert "alert" not in order
    assert planner.state["alert"] == "skipped"
    assert planner.state["after"] == "success"     # a skipped upstream counts as done well
    assert planner.run_status() == "success"


def test_retries_with_a_constant_delay():
    planner = Planner(tasks(T("a", retries=2, retry_delay=10), T("b", "a")))
    planner.advance(0)
    planner.start("a")
    assert [m.state for m in planner.finish("a", False, 100)] == ["retrying"]
    assert planner.next_wakeup() == 110
    assert planner.advance(109.9) == [] and planner.queued() == []
    assert planner.state["b"] == "pending"         # a retrying task is not final
    assert [(m.task, m.state) for m in planner.advance(110)] == [("a", "queued")]
    planner.start("a")
    planner.finish("a", False, 200)
    assert planner.next_wakeup() == 210
    planner.advance(210)
    assert planner.start("a").attempt == 3
    assert [m.state for m in planner.finish("a", False, 300)] == ["failed"]  # retries used up
    assert planner.next_wakeup() is None
    planner.advance(300)
    assert planner.state["b"] == "upstream_failed"


def test_a_retry_that_succeeds_lets_downstream_run():
    planner = Planner(tasks(T("a", retries=3, retry_delay=1), T("b", "a")))
    order = drive(planner, fails={"a": 2})
    assert order == ["a", "a", "a", "b"]
    assert planner.state == {"a": "success", "b": "success"}


def test_exponential_backoff_is_capped_by_max_retry_delay():
    task = T("a", retries=5, retry_delay=10, retry_backoff="exponential", max_retry_delay=35)
    assert [task.delay_before(n) for n in range(2, 7)] == [10, 20, 35, 35, 35]
    planner = Planner(tasks(task))
    planner.advance(0)
    now, waits = 0.0, []
    for _ in range(5):
        planner.start("a")
        planner.finish("a", False, now)
        waits.append(planner.next_wakeup() - now)
        now = planner.next_wakeup()
        planner.advance(now)
    assert waits == [10, 20, 35, 35, 35]
    planner.start("a")
    assert planner.finish("a", False, now)[0].state == "failed"


def test_constant_delay_is_also_capped_and_does_not_grow():
    task = T("a", retries=3, retry_delay=100, max_retry_delay=30)
    assert [task.delay_before(n) for n in (2, 3, 4)] == [30, 30, 30]
    assert [T("b", retry_delay=7).delay_before(n) for n in (2, 3, 4)] == [7, 7, 7]


def test_fail_fast_cancels_pending_and_queued_tasks():
    planner = Planner(tasks(T("a"), T("b"), T("c", "a"), T("d"), T("e", "b")), fail_fast=True)
    planner.advance(0)
    planner.start("a")
    planner.start("b")                             # running: the engine's to stop
    moves = {m.task: m for m in planner.finish("a", False, 1)}
    assert moves["a"].state == "failed"
    assert moves["c"].state == "cancelled" and moves["d"].state == "cancelled"
    assert moves["e"].state == "cancelled"
    assert "fail-fast" in moves["d"].reason
    assert planner.state["b"] == "running"
    planner.finish("b", True, 2)
    planner.advance(2)
    assert planner.done
    assert planner.state == {"a": "failed", "b": "success", "c": "cancelled", "d": "cancelled",
                             "e": "cancelled"}
    assert planner.run_status() == "failed"


def test_fail_fast_cancels_a_task_waiting_to_retry():
    planner = Planner(tasks(T("a"), T("r", retries=2, retry_delay=60)), fail_fast=True)
    planner.advance(0)
    planner.start("a")
    planner.start("r")
    planner.finish("r", False, 0)
    assert planner.state["r"] == "retrying"
    planner.finish("a", False, 1)
    assert planner.state["r"] == "cancelled"
    assert planner.next_wakeup() is None
    assert planner.done


def test_fail_fast_waits_for_retries_to_be_used_up():
    planner = Planner(tasks(T("a", retries=1, retry_delay=5), T("b")), fail_fast=True)
    planner.advance(0)
    planner.start("a")
    assert [m.state for m in planner.finish("a", False, 0)] == ["retrying"]
    assert planner.state["b"] == "queued"


def test_without_fail_fast_nothing_is_cancelled():
    planner = Planner(tasks(T("a"), T("d")))
    planner.advance(0)
    planner.start("a")
    planner.finish("a", False, 1)
    assert planner.state["d"] == "queued"


def test_queued_puts_the_longest_path_ahead_first():
    planner = Planner(tasks(
        T("short"),
        T("mid1"), T("mid2", "mid1"),
        T("long1"), T("long2", "long1"), T("long3", "long2"), T("long4", "long3"),
    ))
    planner.advance(0)
    assert planner.queued() == ["long1", "mid1", "short"]


def test_queued_priority_counts_the_longest_branch_of_a_fork():
    planner = Planner(tasks(
        T("wide"), T("w1", "wide"), T("w2", "wide"), T("w3", "wide"),   # 2 deep, 4 tasks
        T("deep"), T("d1", "deep"), T("d2", "d1"),                     # 3 deep, 3 tasks
    ))
    planner.advance(0)
    assert planner.queued() == ["deep", "wide"]


def test_cancel_pending_and_cancelled_running_task():
    planner = Planner(tasks(T("a"), T("b", "a"), T("c")))
    planner.advance(0)
    planner.start("a")
    moves = planner.cancel_pending("stopped by the user")
    assert {m.task: m.state for m in moves} == {"b": "cancelled", "c": "cancelled"}
    assert all(m.reason == "stopped by the user" for m in moves)
    assert planner.cancelled("a").state == "cancelled"
    assert planner.done
    assert planner.run_status() == "cancelled"


def test_downstream_of_a_cancelled_task_is_cancelled_not_upstream_failed():
    planner = Planner(tasks(T("a"), T("b", "a"), T("c", "a", trigger="one_failed")))
    planner.advance(0)
    planner.start("a")
    planner.cancelled("a")
    planner.advance(1)
    assert planner.state == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert planner.run_status() == "cancelled"
