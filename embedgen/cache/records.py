"""What the cache stores and reports about models: plain frozen records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DTYPES: dict[str, type[np.floating[Any]]] = {"float32": np.float32, "float16": np.float16}
MAX_NORM = 1e4
"""No model this cache serves makes longer vectors; a longer stored one is damaged."""
UNIT_TOLERANCE = 1e-2
"""How far from 1 a normalized model's stored norm may be (float16 rounding stays far below)."""


@dataclass(frozen=True)
class ModelInfo:
    """A model registered in the cache."""

    fingerprint_id: bytes
    description: str
    name: str
    dim: int
    dtype: str
    created: str = ""
    normalized: bool = False
    """The model's vectors have unit length (a stored vector that does not is damaged)."""

    @property
    def nbytes(self) -> int:
        return self.dim * np.dtype(DTYPES[self.dtype]).itemsize

    def plausible(self, matrix: np.ndarray) -> np.ndarray:
        """Per row: finite, with a norm this model can produce (unit length if normalized)."""
        with np.errstate(all="ignore"):
            rows = matrix.astype(np.float32, copy=False)
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        if self.normalized:
            return np.abs(norms - 1.0) <= UNIT_TOLERANCE  # type: ignore[no-any-return]
        return norms <= MAX_NORM  # type: ignore[no-any-return]  # False for inf and NaN

    def to_json(self) -> bytes:
        record = {"description": self.description, "name": self.name, "dim": self.dim}
        record.update(dtype=self.dtype, created=self.created, normalized=self.normalized)
        return json.dumps(record, sort_keys=True).encode()

    @classmethod
    def from_json(cls, fingerprint: bytes, raw: bytes) -> ModelInfo | None:
        """Parse a ``models`` record; None when it is damaged."""
        try:
            rec = json.loads(bytes(raw))
            info = cls(fingerprint, str(rec["description"]), str(rec["name"]), int(rec["dim"]),
                       str(rec["dtype"]), str(rec.get("created", "")),
                       rec.get("normalized", False) is True)  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return info if info.dtype in DTYPES and info.dim > 0 else None


_HASHES = ("sha256", "tokenizer", "model")
"""Fingerprint parts that identify files (shown as the model's name, not as settings)."""


def settings_of(description: str) -> dict[str, str]:
    """The settings a fingerprint description records (pooling, max tokens, dimensions...).

    ``onnx|sha256=...|pooling=mean|normalize=True|dimensions=None|...`` gives
    ``{"pooling": "mean", "normalize": "True", ...}``: unset values and file hashes are left out.
    """
    out: dict[str, str] = {}
    for part in description.split("|"):
        key, eq, value = part.partition("=")
        if eq and key not in _HASHES and value not in ("None", "''", ""):
            out[key] = value
    return out


@dataclass(frozen=True)
class ModelStats:
    """Entries stored under one fingerprint id; ``model`` is None when it is unregistered."""

    fingerprint_id: bytes
    model: ModelInfo | None
    entries: int
    bytes: int
    last_used: str = ""
    """When a run last used the model (UTC, ISO 8601); empty: no run recorded it."""


@dataclass
class VerifyReport:
    """What ``verify`` found: bad entries by reason, and how many it removed."""

    checked: int = 0
    bad: int = 0
    removed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    bad_models: int = 0
    bad_records: int = 0
    """Damaged document and last-run records (a run ignores them and rebuilds them)."""

    @property
    def remaining(self) -> int:
        return self.bad - self.removed

    def add(self, reason: str) -> None:
        """Count one bad entry."""
        self.bad += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
