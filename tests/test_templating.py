"""Unit tests of ``nborch.spec.templating``: Jinja2 rendering of pipeline values and durations."""

from __future__ import annotations

import jinja2
import pytest

from nborch.core.clock import format_duration, parse_duration
from nborch.spec.templating import render, template_error

CTX = {
    "run_id": "20260101T060000-abc",
    "logical_date": "2026-01-01T06:00:00+00:00",
    "ds": "2026-01-01",
    "params": {"size": 5, "rate": 0.5, "flag": True, "region": "eu", "regions": ["eu", "us"],
               "opts": {"deep": 1}, "nothing": None},
}


# -- native types for a single expression ---------------------------------------------------

@pytest.mark.parametrize("template, expected", [
    ("{{ params.size }}", 5),
    ("{{ params.rate }}", 0.5),
    ("{{ params.flag }}", True),
    ("{{ params.region }}", "eu"),
    ("{{ params.regions }}", ["eu", "us"]),
    ("{{ params.opts }}", {"deep": 1}),
    ("{{ params.nothing }}", None),
    ("{{ params.size + 1 }}", 6),
    ("{{ params.size * params.rate }}", 2.5),
    ("{{ params.region | upper }}", "EU"),
    ("{{ params.regions | length }}", 2),
    ("{{ [1, 2] }}", [1, 2]),
    ("{{ ds }}", "2026-01-01"),
    ("{{ run_id }}", "20260101T060000-abc"),
    ("{{ logical_date }}", "2026-01-01T06:00:00+00:00"),
    ("{{params.size}}", 5),                 # no spaces inside the braces
    ("  {{ params.size }}  ", 5),           # whitespace around the one expression
])
def test_single_expression_keeps_native_type(template, expected):
    result = render(template, CTX)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("template, expected", [
    ("n={{ params.size }}", "n=5"),
    ("{{ params.size }}{{ params.size }}", "55"),
    ("{{ params.size }} and {{ params.flag }}", "5 and True"),
    ("data/{{ ds }}/{{ params.region }}.csv", "data/2026-01-01/eu.csv"),
    ("{% if params.flag %}yes{% else %}no{% endif %}", "yes"),
    ("{% for r in params.regions %}{{ r }},{% endfor %}", "eu,us,"),
])
def test_anything_else_renders_to_a_string(template, expected):
    result = render(template, CTX)
    assert result == expected
    assert isinstance(result, str)


@pytest.mark.parametrize("value", ["plain text", "", "{ not a template }", "}}", 3, 2.5, True,
                                   None])
def test_values_without_templates_pass_through(value):
    result = render(value, CTX)
    assert result == value
    assert type(result) is type(value)


def test_nested_lists_and_mappings_are_rendered():
    value = {
        "size": "{{ params.size }}",
        "label": "run {{ run_id }}",
        "paths": ["in/{{ ds }}.csv", "{{ params.regions }}", 7],
        "deep": {"flag": "{{ params.flag }}", "more": [{"r": "{{ params.region }}"}]},
        "fixed": 1.5,
    }
    assert render(value, CTX) == {
        "size": 5,
        "label": "run 20260101T060000-abc",
        "paths": ["in/2026-01-01.csv", ["eu", "us"], 7],
        "deep": {"flag": True, "more": [{"r": "eu"}]},
        "fixed": 1.5,
    }


def test_tuples_render_as_lists():
    assert render(("{{ params.size }}", "x"), CTX) == [5, "x"]


def test_render_does_not_modify_its_input():
    value = {"a": ["{{ params.size }}"]}
    render(value, CTX)
    assert value == {"a": ["{{ params.size }}"]}


def test_rendering_is_data_not_code():
    """A parameter value holding Jinja syntax is not evaluated a second time."""
    ctx = {**CTX, "params": {"evil": "{{ run_id }}"}}
    assert render("{{ params.evil }}", ctx) == "{{ run_id }}"
    assert render("x {{ params.evil }}", ctx) == "x {{ run_id }}"


# -- undefined names are errors (StrictUndefined) -------------------------------------------

@pytest.mark.parametrize("template, name", [
    ("{{ nope }}", "nope"),
    ("x {{ nope }} y", "nope"),
    ("{{ params.nope }}", "nope"),
    ("prefix-{{ params.nope }}", "nope"),
    ("{{ params.nope.deeper }}", "nope"),
    ("{{ params.region ~ nope }}", "nope"),
    ("{{ params.nope | upper }}", "nope"),
    ("{% if nope %}x{% endif %}", "nope"),
])
def test_undefined_names_raise(template, name):
    with pytest.raises(jinja2.UndefinedError) as info:
        render(template, CTX)
    assert name in str(info.value)
    assert name in template_error(info.value)


def test_undefined_name_inside_a_nested_value_raises():
    with pytest.raises(jinja2.UndefinedError):
        render({"a": [1, {"b": "{{ params.missing }}"}]}, CTX)


def test_syntax_errors_raise_and_are_described():
    with pytest.raises(jinja2.TemplateSyntaxError) as info:
        render("{{ params.size ", CTX)
    assert template_error(info.value).startswith("template syntax error")


def test_unknown_filter_is_an_error():
    with pytest.raises(jinja2.TemplateError):
        render("{{ params.size | nofilter }}", CTX)


# -- durations --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("10s", 10),
    ("5m", 300),
    ("1h", 3600),
    ("1h30m", 5400),
    ("1h 30m", 5400),
    ("2m30s", 150),
    ("500ms", 0.5),
    ("1s500ms", 1.5),
    ("1.5h", 5400),
    ("1d", 86400),
    ("0s", 0),
    ("10S", 10),
    (" 10s ", 10),
    (10, 10),
    (0, 0),
    (2.5, 2.5),
    (3600, 3600),
])
def test_durations(text, seconds):
    result = parse_duration(text)
    assert result == pytest.approx(seconds)
    assert isinstance(result, float)


@pytest.mark.parametrize("bad", ["10x", "soon", "", "   ", "s", "ms", "m10", "10s garbage",
                                 "-5s", "1h-30m", "ten seconds", "10 seconds", "1.2.3s", -1,
                                 -0.5, True, False, None, [10], {"s": 10}, "nan", "inf",
                                 "1e400", float("nan"), float("inf")])
def test_bad_durations(bad):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert "duration" in str(info.value)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("seconds, text", [
    (None, "-"),
    (0, "0.0s"),
    (4.26, "4.3s"),
    (90, "1m30s"),
    (3600, "1h00m"),
    (5400, "1h30m"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
