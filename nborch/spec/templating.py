"""Jinja2 rendering of pipeline values, in the sandbox."""

from __future__ import annotations

import re
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

# The sandbox: a pipeline file is data, so its templates may read values and call filters
# but never reach Python internals (``''.__class__.__mro__``) and through them run code.
_env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                            keep_trailing_newline=True)
_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


def render(value: Any, context: dict) -> Any:
    """Render templates inside ``value`` (strings, nested lists and mappings).

    A string that is exactly one ``{{ expr }}`` keeps the expression's native type when it
    is plain data (see ``_plain``); any other string renders to a string. Every failure is a
    ``jinja2.TemplateError``: undefined names raise ``jinja2.UndefinedError``, unsafe
    attributes ``SecurityError``, and an error of the expression itself (``{{ 1 / 0 }}``)
    ``TemplateRuntimeError``.
    """
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            return _render_text(value, context)
        except jinja2.TemplateError:
            raise
        except Exception as exc:  # ZeroDivisionError, TypeError, RecursionError, ...
            raise jinja2.TemplateRuntimeError(f"{type(exc).__name__}: {exc}") from None
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render(v, context) for v in value]
    return value


def _render_text(value: str, context: dict) -> Any:
    single = _SINGLE_EXPR.match(value)
    if single:
        result = _env.compile_expression(single.group("expr"), undefined_to_none=False)(**context)
        if isinstance(result, jinja2.Undefined):
            str(result)  # raises UndefinedError with the name (SecurityError for an unsafe one)
        return _plain(result)
    return _env.from_string(value).render(**context)


def _plain(value: Any) -> Any:
    """``value`` as plain data (what YAML gives: None, bools, numbers, text, lists and
    mappings of them); a tuple becomes a list, any other object its text. Papermill writes a
    value it does not know (a tuple too) as ``"<its str()>"`` unescaped, so the text of
    ``{{ namespace(a='"; ...') }}`` would otherwise become code in the injected cell."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)  # not a subclass (Markup)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k) if isinstance(k, (str, int, float, bool)) else str(k): _plain(v)
                for k, v in value.items()}
    return str(value)


def template_error(exc: Exception) -> str:
    """A short description of a Jinja2 failure."""
    if isinstance(exc, SecurityError):
        return (f"template not allowed: {str(exc).rstrip('.')} (templates render in a sandbox: "
                "they read values and call filters, not Python internals)")
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined name in template ({exc.message})"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template syntax error: {exc.message}"
    return f"template error: {exc}"
