"""Hooks as declared: who to tell (a webhook, a command, an email, a Python callable) when a
run or a task fails, succeeds or retries, or a scheduled slot misses its SLA, read and
checked from YAML or the Python API.
Delivering them is ``runtime.hooks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .clock import parse_duration
from .errors import SpecError
from .secrecy import too_short

TASK_EVENTS = ("on_failure", "on_success", "on_retry")
# A pipeline's hooks: a task's, and ``on_sla_miss`` (about a scheduled slot, not a task).
EVENTS = (*TASK_EVENTS, "on_sla_miss")
KINDS = ("webhook", "command", "email")
OPTIONS = {"webhook": ("headers", "secret_headers", "timeout", "retries"),
           "command": ("timeout",), "email": ("subject",)}
DEFAULT_RETRIES = 2     # extra webhook requests after a failed one (1 s, then 2 s apart)


@dataclass(frozen=True)
class Hook:
    kind: str      # webhook | command | email | python
    target: Any    # URL, argv list, list of addresses, or a callable
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "python":
            return f"python {getattr(self.target, '__qualname__', self.target)!s}"
        if self.kind == "command":
            return f"command {self.target[0]}"
        if self.kind == "webhook":  # its path and query often are the credential (Slack's)
            return f"webhook {_redacted(self.target)}"
        return f"{self.kind} {', '.join(self.target)}"


def _redacted(url: str) -> str:
    """A URL with only its scheme and host: ``https://hooks.slack.com/...``."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/..."


# -- reading hook declarations ----------------------------------------------------------------

def parse_hooks(value: Any, where: str) -> list[Hook]:
    """A hook list from YAML (or the API): each item one of ``webhook:``, ``command:``,
    ``email:`` (with its options), or a Python callable."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    hooks, problems = [], []
    for n, item in enumerate(items):
        at = f"{where}[{n}]" if isinstance(value, list) else where
        try:
            hooks.append(_parse_one(item, at))
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    return hooks


def _parse_one(item: Any, at: str) -> Hook:
    if isinstance(item, Hook):
        return item
    if callable(item):
        return Hook("python", item)
    if not isinstance(item, dict):
        raise SpecError(f"{at}: a hook is a mapping with one of {', '.join(KINDS)} "
                        f"(e.g. webhook: https://...), not {item!r}")
    kinds = [k for k in KINDS if k in item]
    if len(kinds) != 1:
        raise SpecError(f"{at}: a hook needs exactly one of {', '.join(KINDS)}; got "
                        f"{', '.join(map(str, item)) or 'nothing'}")
    kind = kinds[0]
    unknown = [k for k in item if k != kind and k not in OPTIONS[kind]]
    if unknown:
        raise SpecError(f"{at}: unknown key(s) {', '.join(map(repr, unknown))} for a {kind} "
                        f"hook (known: {', '.join(OPTIONS[kind])})")
    target, options = item[kind], {k: v for k, v in item.items() if k != kind}
    if kind == "webhook" and not (isinstance(target, str) and target.startswith(("http://",
                                                                               "https://"))):
        raise SpecError(f"{at}: webhook must be an http:// or https:// URL, not {target!r}")
    if kind == "command" and not (isinstance(target, list) and target
                                  and all(isinstance(a, str) for a in target)):
        raise SpecError(f"{at}: command must be a list of strings (argv, no shell), e.g. "
                        "[notify-send, \"pipeline failed\"]")
    if kind == "email":
        target = [target] if isinstance(target, str) else target
        if not (isinstance(target, list) and target and all(
                isinstance(a, str) and "@" in a for a in target)):
            raise SpecError(f"{at}: email must be an address or a list of addresses")
    for key in ("headers", "secret_headers"):
        value = options.get(key)
        if value is not None and not (isinstance(value, dict) and all(
                isinstance(v, str) for v in value.values())):
            raise SpecError(f"{at}: {key} must map header names to strings")
    if "timeout" in options:
        try:
            options["timeout"] = parse_duration(options["timeout"])
        except ValueError as exc:
            raise SpecError(f"{at}: timeout: {exc}") from None
    retries = options.get("retries", DEFAULT_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SpecError(f"{at}: retries must be a whole number >= 0, not {retries!r}")
    return Hook(kind, target, options)


def credentials(hooks: list[Hook], env: Mapping[str, str]) -> list[str]:
    """The secret values hooks send: header values, webhook URLs, the SMTP password."""
    values = [env.get(var, "") for h in hooks
              for var in h.options.get("secret_headers", {}).values()]
    values += [h.target for h in hooks if h.kind == "webhook"]
    if any(h.kind == "email" for h in hooks):
        values.append(env.get("NBORCH_SMTP_PASSWORD", ""))
    return [v for v in values if v and not too_short(v)]


def missing_settings(hooks: list[Hook], env: Mapping[str, str]) -> list[str]:
    """Environment variables the hooks need but ``env`` lacks: what ``secret_headers`` name,
    and ``NBORCH_SMTP_HOST`` for an email hook."""
    needed = {var for h in hooks for var in h.options.get("secret_headers", {}).values()}
    if any(h.kind == "email" for h in hooks):
        needed.add("NBORCH_SMTP_HOST")
    return sorted(var for var in needed if not env.get(var))
