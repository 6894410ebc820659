"""Checksums on what the cache stores, so a damaged value is found and never served.

Every value written since 0.x (see CHANGELOG) is ``payload + crc32(key + payload)`` (4
bytes, little-endian): a value moved under another key or changed by one bit fails the check.
Values written before checksums (a vector of exactly the model's size, a JSON record, a
document record of whole 12-byte rows) stay readable, guarded by the checks on their content.
"""

from __future__ import annotations

import zlib
from typing import Any

CHECK_BYTES = 4
CHECK_RESIDUE = 0x2144DF1C
"""CRC-32 of anything followed by its own little-endian CRC-32: a sealed value is intact when
``crc32(value, crc32(key)) == CHECK_RESIDUE``, one pass with no slicing."""


def checksum(key: Any, payload: Any) -> bytes:
    """The 4-byte check of ``payload`` stored under ``key`` (both bytes-like)."""
    return zlib.crc32(payload, zlib.crc32(key)).to_bytes(CHECK_BYTES, "little")


def seal(key: bytes, payload: bytes) -> bytes:
    """``payload`` with its check appended, as stored."""
    return payload + checksum(key, payload)


def unseal(key: Any, raw: Any) -> bytes | None:
    """The payload of a sealed value, or None when its check does not match."""
    if raw is None or len(raw) < CHECK_BYTES:
        return None
    payload = bytes(raw[:-CHECK_BYTES])
    return payload if checksum(key, payload) == bytes(raw[-CHECK_BYTES:]) else None


def record(key: Any, raw: Any) -> bytes:
    """A stored JSON record's bytes: sealed and checked, or as written before checksums (the
    caller's parse rejects a damaged sealed record, whose check bytes are not JSON)."""
    return unseal(key, raw) or bytes(raw)


DOC_ROW = 12
"""A document record is rows of (char_start, char_end, tokens) as little-endian uint32."""


def doc_record(key: Any, raw: Any) -> bytes | None:
    """A document record's rows, or None when it is damaged."""
    if raw is None:
        return None
    if len(raw) % DOC_ROW == CHECK_BYTES:
        return unseal(key, raw)
    return bytes(raw) if len(raw) % DOC_ROW == 0 else None
