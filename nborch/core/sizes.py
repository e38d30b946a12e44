"""Sizes as nborch reads and writes them: ``64K``, ``4M`` in settings; ``4 MiB`` in
messages."""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_size(text: str) -> int:
    """``"4M"`` -> 4194304; ``"65536"``, ``"64K"``, ``"64KiB"``, ``"1.5M"`` are accepted."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (bytes, or with a K, M or G suffix)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def human(size: int) -> str:
    """``4194304`` -> ``"4 MiB"``; ``1536`` -> ``"1.5 KiB"``."""
    for unit, factor in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
