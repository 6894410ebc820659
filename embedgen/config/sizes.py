"""Byte sizes written as ``2GB``, ``512MiB`` or ``1.5G`` (binary units)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: int | str) -> int:
    """Bytes from ``2GB``, ``512MiB``, ``1.5G`` or a plain integer (binary units)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 2GB or 512MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a size >= 0")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size such as 2GB or 512MB, got {value!r}")
    unit = m.group(2).upper().replace("I", "").replace("B", "")
    return int(float(m.group(1)) * _UNITS[unit])
