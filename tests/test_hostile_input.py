"""Hostile input never gets through: templates cannot reach Python, names cannot become code,
control characters never reach the terminal, and odd input is a clear error (exit 2), never
a traceback.

Property-based tests (hypothesis) throw any text at the checks; end-to-end tests run the
real ``nborch`` command and check exit code 2, no traceback and nothing recorded.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from pathlib import Path

import jinja2
import pytest
import yaml
from conftest import nborch, write_notebook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import SecurityError

from nborch import Pipeline
from nborch.core.errors import SpecError
from nborch.core.task import check_task_name, is_parameter_name
from nborch.spec.loader import from_mapping, load
from nborch.spec.templating import render, template_error
from nborch.spec.yamltext import parse_params, parse_scalar, parse_yaml_text
from nborch.ui.console import markup, printable

CTX = {"run_id": "r1", "logical_date": "2026-01-01T00:00:00", "ds": "2026-01-01",
       "params": {"size": 5, "region": "eu", "regions": [1, 2]}}
CONTROLS = [chr(c) for c in [*range(0x20), 0x7f, *range(0x80, 0xa0)]]
ESCAPES = ["\x1b]0;pwned\x07", "\x1b]52;c;SGVsbG8=\x07", "\x1b[2J", "\x1b[31m", "\x9b1m", "\r"]
SSTI = [  # the classic ways out of a template into Python
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__()|length }}",
    "x{{ ''.__class__ }}y",
    "{{ params.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ params.regions.__class__.__base__.__subclasses__() }}",
    "{{ (params|attr('__class__')).__mro__ }}",
    "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{{ c }}{% endfor %}",
    "{{ ''.format.__globals__ }}",
    "{{ '{0.__class__}'.format(params) }}",
    "{{ 'a'.__add__('b') }}",
]

# Hypothesis runs many examples per test: keep them quick on a shared machine.
quick = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow,
                                        HealthCheck.function_scoped_fixture])
hostile_text = st.text()  # any character (but lone surrogates), any length, any lines


def _with_control(text: str, control: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + control + text[at:]


# -- task names -----------------------------------------------------------------------------

valid_names = st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True).filter(
    lambda n: ".." not in n)


@quick
@given(name=valid_names)
def test_accepted_task_names_round_trip_through_yaml(name):
    spec = {"name": "p", "tasks": {name: {"notebook": "x.ipynb"}}}
    pipeline = from_mapping(parse_yaml_text(yaml.safe_dump(spec), "p.yaml"), Path("p.yaml"))
    assert list(pipeline.tasks) == [name]
    assert check_task_name(name, "here") is None


@quick
@given(text=st.text(), control=st.sampled_from(CONTROLS), at=st.integers(0, 50))
def test_a_task_name_with_a_control_character_is_refused(text, control, at):
    name = _with_control(text, control, at)
    assert check_task_name(name, "here") is not None
    with pytest.raises(SpecError):
        Pipeline("p").notebook("x.ipynb", name=name)
    spec = {"name": "p", "tasks": {name: {"notebook": "x.ipynb"}}}
    with pytest.raises(SpecError):
        from_mapping(parse_yaml_text(yaml.safe_dump(spec), "p.yaml"), Path("p.yaml"))


@quick
@given(name=st.one_of(valid_names.map(lambda n: n + "\n"), hostile_text))
def test_any_task_name_is_accepted_only_if_it_fully_matches(name):
    """Any text: a valid name or a SpecError, never a crash; 'a\\n' is not valid ('$' in a
    regex matches before a final newline)."""
    ok = re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None and ".." not in name
    try:
        task = Pipeline("p").notebook("x.ipynb", name=name)
    except SpecError:
        assert not ok
    else:
        assert ok and task.name == name


@pytest.mark.parametrize("name", ["a\n", "a\r\n", "\na", "a\x00", "a\x1b]0;x\x07", "a b"])
def test_pipeline_names_with_control_characters_are_refused(name):
    with pytest.raises(SpecError):
        Pipeline(name)


@pytest.mark.parametrize("name", ["p\n", "p!", "p\x1b]0;x\x07"])
def test_the_magic_refuses_a_bad_name_option(tmp_path, name):
    from nborch.ui.jupyter.cell import read_body
    for body in ("a.ipynb", "name: other\ntasks: {a: {notebook: a.ipynb}}"):
        with pytest.raises(SpecError, match="name"):
            read_body(body, tmp_path, "default", name, {})


# -- what reaches the terminal --------------------------------------------------------------

def _forbidden(text: str, multiline: bool) -> list[str]:
    allowed = "\n\t" if multiline else ""
    return [c for c in text if unicodedata.category(c) == "Cc" and c not in allowed]


@quick
@given(text=hostile_text)
def test_printable_never_lets_a_control_character_through(text):
    many, one = printable(text), printable(text, multiline=False)
    assert not _forbidden(many, True) and "\x1b" not in many
    assert not _forbidden(one, False) and "\n" not in one


@quick
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"])))
def test_printable_keeps_text_without_control_characters(text):
    assert printable(text) == text
    assert printable(text + "\nnext\tline") == text + "\nnext\tline"


@quick
@given(text=hostile_text, escape=st.sampled_from(ESCAPES))
def test_escape_sequences_are_shown_not_sent(text, escape):
    out = printable(text + escape + text)
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\r" not in out


@quick
@given(text=st.one_of(hostile_text, st.sampled_from(
    ["[bold]x", "[link=https://example.com]click[/link]", "[/]", "x\\", "\\[b]", "[red]a[/red]",
     ":smile:", "[@click=app.quit]q[/]", "\\[", "a\\\\[ b"])))
def test_markup_in_user_text_is_shown_as_written(text):
    from rich.text import Text
    shown = Text.from_markup(f"[bold]{markup(text)}[/] and [dim]{markup(text, False)}[/]",
                             emoji=False)  # as nborch's consoles
    assert shown.plain == f"{printable(text)} and {printable(text, False)}"


def test_show_prints_hostile_names_and_errors_as_plain_text():
    from io import StringIO

    from rich.console import Console

    from nborch.core.run import Run, TaskRun
    from nborch.ui.console import print_run
    task = TaskRun(name="t", status="failed", attempts=1,
                   error={"type": "ValueError", "cell": 1, "cell_source": "raise X\x1b[2J",
                          "message": "\x1b]0;pwned\x07 [bold]x[/] [link=http://e]y[/link]"},
                   values={"k\x1b]52;c;SGVsbG8=\x07": "v"})
    run = Run(run_id="r1", pipeline="p", status="failed", tasks={"t": task},
              logical_date="2026-01-01T00:00:00\x1b[2J")
    out = StringIO()
    print_run(run, Console(file=out, width=200, force_terminal=False, emoji=False))
    text = out.getvalue()
    assert not _forbidden(text, True)
    assert "[bold]x[/] [link=http://e]y[/link]" in text
    assert "\\x1b]0;pwned\\x07" in text and "k\\x1b]52;c;SGVsbG8=\\x07" in text


# -- templating -----------------------------------------------------------------------------

TOKENS = ["{{", "}}", "{%", "%}", "{#", "#}", " ", "params", "size", "region", ".", "[", "]",
          "(", ")", "'", '"', "|", "length", "upper", "attr", "format", "x", "1", "0", "/",
          "+", "-", "~", ",", ":", "=", "if", "else", "endif", "for", "in", "endfor", "set",
          "ds", "run_id", "self", "cycler", "lipsum", "namespace", "joiner", "range",
          "__class__", "__mro__", "__subclasses__", "__globals__", "__init__", "__builtins__",
          "mro", "\n", "\x00", "\x1b", "é", "namespace(a='\"')", "dict(a=1).items()",
          "('\"',)", "items", "keys()"]  # no '*': 9**9**9 would only measure patience
INJECTIONS = [  # values whose str() papermill would write unescaped into the injected cell
    "{{ namespace(a='\"; import os; os.system(\"id\"); x = \"') }}",
    "{{ dict(a='\"; import os; x = \"').items() }}",
    "{{ ('\"; import os; x = \"',) }}",
    "{{ ['\"; import os', ('\"', {('\"', 1): 2})] }}",
    "{{ cycler('\"; import os') }}", "{{ range(2) }}", "{{ lipsum }}", "{{ 'x'|safe }}",
]


def _injected_cell_is_data(value) -> None:
    """The cell papermill injects for ``p = value`` assigns data to ``p`` and does nothing
    else (``float('nan')`` is papermill's way to write NaN)."""
    import ast

    from papermill.translators import PythonTranslator
    tree = ast.parse(PythonTranslator.codify({"p": value}))
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign)
    assert [t.id for t in tree.body[0].targets] == ["p"]
    for node in ast.walk(tree.body[0].value):
        assert isinstance(node, (ast.Constant, ast.List, ast.Dict, ast.Load, ast.UnaryOp,
                                 ast.USub, ast.Call, ast.Name)), ast.dump(node)
        if isinstance(node, ast.Call):
            assert ast.unparse(node.func) == "float" and isinstance(node.args[0], ast.Constant)
        if isinstance(node, ast.Name):
            assert node.id == "float"


@quick
@given(template=st.one_of(hostile_text, st.lists(st.sampled_from(TOKENS), max_size=30)
                          .map("".join)))
def test_rendering_any_text_returns_or_raises_a_template_error(template):
    try:
        value = render(template, CTX)
    except jinja2.TemplateError as exc:
        assert isinstance(template_error(exc), str)
    else:
        _injected_cell_is_data(value)


@pytest.mark.parametrize("template", INJECTIONS)
def test_a_rendered_value_is_plain_data_so_papermill_writes_it_as_data(template):
    value = render(template, CTX)
    assert isinstance(value, (str, list, int))
    _injected_cell_is_data(value)


@quick
@given(attribute=st.from_regex(r"__[A-Za-z_][A-Za-z0-9_]*__", fullmatch=True),
       owner=st.sampled_from(["''", "params", "params.regions", "ds", "cycler", "lipsum",
                              "namespace", "self", "range", "(1)"]))
def test_the_sandbox_refuses_every_dunder_attribute(attribute, owner):
    for template in (f"{{{{ {owner}.{attribute} }}}}", f"a{{{{ {owner}.{attribute} }}}}b",
                     f"{{{{ {owner}[{attribute!r}] }}}}", f"{{{{ {owner}|attr({attribute!r}) }}}}"):
        with pytest.raises((SecurityError, jinja2.UndefinedError)):
            render(template, CTX)


@pytest.mark.parametrize("template", SSTI)
def test_template_escapes_are_refused_with_a_clear_message(template):
    with pytest.raises(jinja2.TemplateError) as info:
        render(template, CTX)
    message = template_error(info.value)
    assert "sandbox" in message or "undefined" in message


def test_the_sandbox_keeps_native_types_and_strict_undefined():
    assert render("{{ params.size }}", CTX) == 5
    assert render("{{ params.regions }}", CTX) == [1, 2]
    assert render("{{ params.region | upper }}-{{ ds }}", CTX) == "EU-2026-01-01"
    with pytest.raises(jinja2.UndefinedError):
        render("{{ nope }}", CTX)
    with pytest.raises(jinja2.TemplateError) as info:
        render("{{ 1 / 0 }}", CTX)
    assert "ZeroDivisionError" in template_error(info.value)


# -- parameter names (they become code in the injected cell) --------------------------------

@quick
@given(name=st.one_of(hostile_text, st.sampled_from(
    ["a=1; import os; os.system('x') #", "class", "None", "1a", "a b", "a\n", "ok", "_x", "ñ",
     "match", "__import__('os')", "a.b", "a[0]"])))
def test_parameter_names_must_be_identifiers(name):
    ok = name.isidentifier() and not keyword.iskeyword(name)
    assert is_parameter_name(name) is ok
    try:
        Pipeline("p").notebook("x.ipynb", parameters={name: 1})
    except SpecError as exc:
        assert not ok and "identifier" in str(exc)
    else:
        assert ok


@pytest.fixture(scope="module")
def ploomber_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ploomber")
    write_notebook(root / "a.ipynb", "print(1)", parameters="x = 1")
    (root / "tasks.py").write_text("def f(product, x=None):\n    pass\n", encoding="utf-8")
    return root


def _ploomber(root: Path, name: str, source: str) -> Pipeline:
    spec = {"tasks": [{"source": source, "product": "out/a.ipynb" if source.endswith("ipynb")
                       else "out/f.txt", "params": {name: 1}}]}
    (root / "pipeline.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return load(root / "pipeline.yaml")


@quick
@given(name=st.one_of(hostile_text, st.sampled_from(
    ["a=1; import os; os.system('x') #", "x=__import__('os').system('id')", "for", "x"])),
       source=st.sampled_from(["a.ipynb", "tasks.f"]))
def test_ploomber_params_names_are_identifiers_or_refused(ploomber_project, name, source):
    ok = name.isidentifier() and not keyword.iskeyword(name)
    try:
        pipeline = _ploomber(ploomber_project, name, source)
    except SpecError as exc:
        if ok:
            return  # refused for another reason (e.g. f() takes no such argument)
        assert f"parameter name {name!r}" in str(exc)
    else:
        assert ok
        task = pipeline.tasks[next(iter(pipeline.tasks))]
        if task.product_convention.source is not None:  # the generated notebook of a function task
            import ast
            for cell in task.product_convention.source["cells"]:
                ast.parse(cell["source"])


# -- YAML and -p: any text is a value or a SpecError ----------------------------------------

@quick
@given(text=st.one_of(hostile_text, st.lists(st.sampled_from(
    ["{{", "}}", "{", "}", "[", "]", ":", " ", "\n", "- ", "a", "ds", "'", '"', ",", "&x", "*x",
     "!!python/object:os.system", "name: p", "tasks:", "  t:", "    notebook: x.ipynb"]),
    max_size=25).map("".join)))
def test_any_yaml_text_is_a_pipeline_or_a_spec_error(text):
    try:
        data = parse_yaml_text(text, "p.yaml")
        from_mapping(data, Path("p.yaml"))
    except SpecError:
        pass


@quick
@given(value=hostile_text)
def test_any_p_value_is_a_value_or_a_spec_error(value):
    parse_scalar(value)  # a value, whatever the text
    try:
        parse_params([f"s={value}"])
    except SpecError:
        assert "{{" in value or "{%" in value


# -- the real command: exit 2, a message, no traceback, nothing recorded -------------------

def _refused(workdir: Path, *args: str, expect: str) -> None:
    proc = nborch(*args, cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.startswith("nborch: error:") and expect in proc.stderr, proc.stderr
    assert not _forbidden(proc.stderr, True)
    assert not (workdir / ".nborch").exists(), "a run was recorded"


def _pipeline(workdir: Path, text: str) -> str:
    write_notebook(workdir / "a.ipynb", "print(x)", parameters="x = 1")
    (workdir / "pipeline.yaml").write_text(text, encoding="utf-8")
    return "pipeline.yaml"


BAD_YAML = {
    "template_escape": ("name: p\ntasks:\n  a:\n    notebook: a.ipynb\n    parameters: "
                        "{x: \"{{ ''.__class__.__mro__[1].__subclasses__()|length }}\"}\n",
                        "sandbox"),
    "unquoted_template": ("name: p\ntasks:\n  a:\n    notebook: a.ipynb\n"
                          "    parameters: {x: {{ ds }}}\n", "must be quoted"),
    "nul_in_notebook_path": ('name: p\ntasks:\n  a:\n    notebook: "a\\0.ipynb"\n', "NUL byte"),
    "nul_in_product": ('name: p\ntasks:\n  a:\n    notebook: a.ipynb\n    product: "o\\0.csv"\n',
                       "NUL byte"),
    "task_name_newline": ('name: p\ntasks:\n  "a\\n":\n    notebook: a.ipynb\n', "task name"),
    "pipeline_name_newline": ('name: "p\\n"\ntasks:\n  a:\n    notebook: a.ipynb\n',
                              "pipeline name"),
    "parameter_name_code": ("name: p\ntasks:\n  a:\n    notebook: a.ipynb\n    parameters:\n"
                            "      \"x=1; import os; os.system('touch pwned') #\": 1\n",
                            "not a Python identifier"),
    "escape_in_task_name": ('name: p\ntasks:\n  "a\\e]0;pwned\\a":\n    notebook: a.ipynb\n',
                            "task name"),
    "ploomber_parameter_name": ("tasks:\n  - source: a.ipynb\n    product: out/a.ipynb\n"
                                "    params: {\"x=1; import os; os.system('touch pwned') #\": 1}\n",
                                "not a Python identifier"),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_yaml_is_refused_end_to_end(workdir, case, command):
    text, expect = BAD_YAML[case]
    _refused(workdir, command, _pipeline(workdir, text), expect=expect)
    assert not (workdir / "pwned").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_template_in_a_p_value_is_refused(workdir, command):
    path = _pipeline(workdir, "name: p\nparameters: {s: 1}\ntasks:\n  a:\n    notebook: a.ipynb\n")
    _refused(workdir, command, path, "-p", "s={{x}}", expect="-p")


def test_escape_sequences_in_a_pipeline_path_are_not_sent_to_the_terminal(workdir):
    _refused(workdir, "run", "p\x1b]0;pwned\x07.yaml", expect="pipeline file not found")


def test_a_nul_byte_in_a_pipeline_path_is_a_spec_error(tmp_path):
    for path in ("p\x00.yaml", tmp_path / "p\x00"):
        with pytest.raises(SpecError, match="NUL byte"):
            load(path)
        with pytest.raises(SpecError, match="NUL byte"):
            Pipeline.from_yaml(path)


def test_a_hostile_error_is_printed_as_text(workdir):
    """A notebook's error and published names carry escape sequences and rich markup: the
    run's progress lines and summary print them as text."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        'import nborch\nnborch.publish("k\\x1b]52;c;SGVsbG8=\\x07", 1)\n'
        'raise ValueError("\\x1b]0;pwned\\x07 [bold]x[/] [link=http://e]y[/link]\\r\\x9b")')]
    nbformat.write(nb, str(workdir / "evil.ipynb"))
    (workdir / "pipeline.yaml").write_text("name: evil\ntasks:\n  evil: {notebook: evil.ipynb}\n",
                                           encoding="utf-8")
    proc = nborch("run", "pipeline.yaml", cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    assert not _forbidden(proc.stdout, True) and not _forbidden(proc.stderr, True)
    assert "[bold]x[/] [link=http://e]y[/link]" in proc.stdout
    assert "\\x1b]0;pwned\\x07" in proc.stdout and "k\\x1b]52;c;SGVsbG8=\\x07" in proc.stdout


def test_a_template_value_cannot_become_code_in_the_injected_cell(workdir):
    write_notebook(workdir / "a.ipynb", "print(repr(x))", parameters="x = 'text'")
    (workdir / "pipeline.yaml").write_text(
        "name: p\ntasks:\n  a:\n    notebook: a.ipynb\n    parameters:\n"
        "      x: \"{{ namespace(a='\\\"; open(\\\"pwned\\\", \\\"w\\\"); y = \\\"') }}\"\n",
        encoding="utf-8")
    proc = nborch("run", "pipeline.yaml", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (workdir / "pwned").exists()
