"""Pools: a name shared by tasks of any run on a store, at most N of which run at once (the
store holds the slots). What a pool's name and size may be, and how a task waiting for a
slot says so."""

from __future__ import annotations

import re
from typing import Any

POOL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # use fullmatch
MAX_SLOTS = 10_000


def pool_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a pool, or None when it can."""
    if not isinstance(name, str) or not POOL_NAME_RE.fullmatch(name):
        return (f"pool name {name!r} is not valid: use 1 to 64 letters, digits, '_', '.' or "
                "'-', starting with a letter or digit")
    return None


def slots_problem(slots: Any) -> str | None:
    """Why ``slots`` cannot be a pool's size, or None when it can."""
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
        return f"a pool's slots must be a whole number from 1 to {MAX_SLOTS:,}, not {slots!r}"
    return None


def waiting_reason(pool: str) -> str:
    """A queued task's reason while every slot of its pool is taken."""
    return f"waiting for a slot in pool {pool!r}"
