"""YAML as nborch reads it: safe, dates left as text, duplicate keys refused, each key's
line remembered so that every problem can say where it is; ``-p KEY=VALUE`` values as YAML
scalars; unknown keys with a "did you mean"."""

from __future__ import annotations

import difflib
from collections.abc import Hashable
from typing import Any

import yaml

from ..core.errors import SpecError


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""
    lines: dict


class _Loader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps (``2026-01-01`` stays a string, as a
    notebook parameter expects) and with duplicate keys as errors."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    result = _Mapping()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            # e.g. an unquoted {{ ds }}: YAML reads it as a mapping inside a mapping
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping or list cannot be a key here; a value starting with "
                "'{{' must be quoted (\"{{ ds }}\")", key_node.start_mark)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {result.lines[key]})",
                key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml_text(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = exc.problem or exc.context or str(exc)
        if exc.context and exc.context_mark and exc.problem_mark and \
                exc.context_mark.line != exc.problem_mark.line:
            # e.g. an unclosed quote: the parser notices at the end, the cause is where it began
            what += f" ({exc.context} that starts at line {exc.context_mark.line + 1})"
        raise SpecError(f"invalid YAML at {line}{what}", source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", source=source) from None


def parse_params(pairs: list[str]) -> dict:
    """``-p KEY=VALUE`` options (CLI and magic) as a dict of YAML scalars."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"-p {pair!r}: use -p KEY=VALUE")
        if "{{" in value or "{%" in value:
            raise SpecError(f"-p {pair!r}: a -p value is used as given, not rendered as a "
                            "template ({{ ... }} is rendered in task values only); give the "
                            "value itself")
        out[key.strip()] = parse_scalar(value)
    return out


def parse_scalar(text: str) -> Any:
    """Read ``-p KEY=VALUE`` values as YAML scalars: ``4`` is 4, ``true`` is True."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506
    except (yaml.YAMLError, ValueError):  # ValueError: e.g. a NUL byte, which YAML refuses
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text


def key_line(mapping: Any, key: str) -> str:
    lines = getattr(mapping, "lines", {})
    return f" (line {lines[key]})" if key in lines else ""


def unknown_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> list[str]:
    problems = []
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = (f"; did you mean {close[0]!r}?" if close
                    else f"; known keys: {', '.join(allowed)}")
            problems.append(f"{where}: unknown key {key!r}{key_line(mapping, key)}{hint}")
    return problems
