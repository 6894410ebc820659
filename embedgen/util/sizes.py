"""Byte sizes: one formatter for people and one parser for config values."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_NAMES = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``2.3 GiB``: binary units, one decimal above bytes."""
    value, step = abs(float(n)), 0
    while value >= 1024 and step < len(_NAMES) - 1:
        value /= 1024
        step += 1
    sign = "-" if n < 0 else ""
    return f"{sign}{value:.0f} B" if step == 0 else f"{sign}{value:.1f} {_NAMES[step]}"


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
