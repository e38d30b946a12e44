"""Keeping secrets secret: masking every spelling of a secret's value, and the environment
each task is given.

Masking works on values, never on serialized text: a secret holding a quote, a backslash or
a newline is spelt differently once it is JSON-encoded, repr'd, HTML-escaped or split into
lines, so each of those spellings ("forms") is masked wherever a string is about to be
written (a notebook's outputs, a log, an error, a published value) and before anything cuts
it short. Text that arrives in pieces (a log) goes through a ``StreamMasker``, which holds
back a tail that could be the start of a secret until the next piece says whether it is.
"""

from __future__ import annotations

import bisect
import functools
import html
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary text ("1", "yes"); a shorter secret is refused at
# validation, so nothing declared a secret is ever left unmasked.
MIN_SECRET_LENGTH = 4
# Environment variables that carry nborch's own credentials (email hooks, OpenLineage):
# never given to a task.
OWN_CREDENTIALS = ("NBORCH_SMTP_PASSWORD", "OPENLINEAGE_API_KEY")
OWN_CREDENTIAL_PREFIXES = ("OPENLINEAGE__TRANSPORT__AUTH",)


def own_credentials(env: Mapping[str, str]) -> set[str]:
    """The names in ``env`` that hold nborch's own credentials."""
    return {k for k in env if k in OWN_CREDENTIALS or k.startswith(OWN_CREDENTIAL_PREFIXES)}


def too_short(value: str) -> bool:
    """Whether a secret's value is too short to mask without masking ordinary text."""
    return len(value.strip()) < MIN_SECRET_LENGTH


def _spellings(text: str) -> set[str]:
    """``text`` as it appears after one round of the usual escapes."""
    return {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1],
            repr(text)[1:-1], ascii(text)[1:-1], html.escape(text), html.escape(text, False),
            quote(text, safe=""), quote_plus(text)}


def _strings(value: Any) -> Iterable[str]:
    """The strings in a parsed JSON document (not its keys, nor numbers such as a port)."""
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def secret_forms(secret: str) -> set[str]:
    """Every form of ``secret`` that output can carry: the value, each string in it when it
    is a JSON document (a service account's key, once parsed, is printed field by field),
    each line of those (as is and stripped), and each of these JSON-, repr-, HTML- and
    URL-escaped, once or twice (a repr of a dict holding a JSON string). Forms shorter than
    ``MIN_SECRET_LENGTH``, or only blanks, are left out: they would mask ordinary text."""
    whole = {secret}
    try:
        whole.update(_strings(json.loads(secret)))
    except ValueError:
        pass
    lines = {line for text in whole for line in {*text.splitlines(), *text.split("\n")}}
    pieces = whole | lines | {line.strip() for line in lines}
    forms = {twice for piece in pieces for once in _spellings(piece)
             for twice in _spellings(once)}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH and form.strip()}


def _trie_pattern(words: Iterable[str]) -> str:
    """A regular expression matching any of ``words``, the longest where several start at one
    place, shaped as their trie: matching costs a walk down one path, not a try of each word
    (a PEM key has hundreds of forms)."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = None  # a word ends here

    def branch(node: dict) -> str:
        parts = []
        for char, child in sorted((k, v) for k, v in node.items() if k):
            chain = char
            while len(child) == 1 and "" not in child:  # a run with no choice: one literal
                (char, child), = child.items()
                chain += char
            parts.append(re.escape(chain) + branch(child))
        if not parts:
            return ""
        body = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
        return f"(?:{body})?" if "" in node else body  # greedy: the longer word first

    return branch(trie)


@functools.lru_cache(maxsize=16)  # one per run's secrets, not per attempt: a key's takes 0.3 s
def _compiled(secrets: frozenset[str]) -> tuple[list[str], re.Pattern | None]:
    forms = sorted({f for s in secrets for f in secret_forms(s)})
    return forms, re.compile(_trie_pattern(forms)) if forms else None


class Masker:
    """Replaces every form of the given secret values with ``***``."""

    def __init__(self, secrets: Iterable[str]):
        self.forms, self._pattern = _compiled(frozenset(secrets))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        return self._pattern.sub(MASK, value) if self._pattern is not None else value

    def data(self, value: Any) -> Any:
        """A copy of JSON-able ``value`` with secrets masked in every string, key and
        number (a number holding a secret's digits becomes a masked string)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown = str(value)
            masked = self.text(shown)
            return value if masked == shown else masked
        return value

    def notebook(self, nb) -> None:
        """Mask an nbformat notebook in place: sources, outputs, errors and metadata, value
        by value, leaving the fields that make it valid nbformat alone."""
        if self._pattern is None:
            return
        nb.metadata = self.data(nb.metadata)
        for cell in nb.cells:
            cell.source = self.text(cell.source)
            cell.metadata = self.data(cell.metadata)
            if "attachments" in cell:
                cell.attachments = self.data(cell.attachments)
            for output in cell.get("outputs", ()):
                for key, value in output.items():
                    if key in ("data", "metadata"):  # keyed by MIME type: keys kept
                        output[key] = {mime: self.data(v) for mime, v in value.items()}
                    elif key not in _STRUCTURAL and not (key == "name" and
                                                         output.output_type == "stream"):
                        output[key] = self.data(value)

    def stream(self) -> StreamMasker:
        return StreamMasker(self)

    def held_tail(self, text: str) -> int:
        """The length of the longest end of ``text``'s last line that begins some form: what
        must wait for more text before it can be written. (Each line of a multi-line secret
        is a form of its own, so a finished line is never held.)"""
        line_start = text.rfind("\n") + 1
        for at in range(line_start, len(text)):
            tail = text[at:]
            after = bisect.bisect_left(self.forms, tail)  # the forms sorted: prefixes first
            if after < len(self.forms) and self.forms[after].startswith(tail):
                return len(tail)
        return 0


# Notebook fields whose values are part of nbformat's structure, never output.
_STRUCTURAL = frozenset({"output_type", "execution_count"})


class StreamMasker:
    """Masks text that arrives in pieces (a secret may be split between two writes):
    ``feed`` returns what can be written now, ``flush`` the rest at the end."""

    def __init__(self, masker: Masker):
        self.masker = masker
        self.pending = ""

    def feed(self, text: str) -> str:
        if not self.masker:
            return text
        text = self.masker.text(self.pending + text)
        held = self.masker.held_tail(text)
        self.pending = text[len(text) - held:] if held else ""
        return text[:len(text) - held]

    def flush(self) -> str:
        """What was held at the end: the start of a secret whose rest never came (cut off by
        a limit, a kill) is masked; a few characters are too short to tell anything."""
        text, self.pending = self.pending, ""
        return MASK if len(text.strip()) >= MIN_SECRET_LENGTH else text


def task_environment(additions: Mapping[str, str], withheld: Iterable[str]) -> dict[str, str]:
    """The whole environment of a task's kernel or command: this process's, without the
    ``withheld`` names (secrets declared for other tasks, nborch's own credentials), plus
    ``additions`` (the task's ``env``, run details and its own secrets)."""
    withheld = set(withheld)
    return {**{k: v for k, v in os.environ.items() if k not in withheld}, **additions}


def search_path(env: dict) -> str:
    """The ``PATH`` a command runs with: nborch's own Python environment first, as if it
    were activated, so ``nborch publish`` (and the tools installed beside nborch, such as
    dbt) are found even when nborch was started by its full path."""
    path = env.get("PATH", os.environ.get("PATH", os.defpath))
    here = os.path.dirname(sys.executable)
    return path if path.split(os.pathsep)[0] == here else here + os.pathsep + path


__all__ = ["MASK", "MIN_SECRET_LENGTH", "Masker", "StreamMasker", "own_credentials",
           "search_path", "secret_forms", "task_environment", "too_short"]
