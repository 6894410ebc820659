"""How close a variant's vectors are to the original's, on the same texts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NEIGHBOURS = 10


@dataclass(frozen=True)
class Fidelity:
    """Cosine between each text's two vectors, and agreement of nearest neighbours."""

    mean: float
    min: float
    p1: float
    """1st percentile of the cosines."""
    top10: float
    """Mean share of each text's 10 nearest neighbours (within the sample) both agree on."""

    def meets(self, min_mean: float, min_worst: float) -> bool:
        return self.mean >= min_mean and self.min >= min_worst

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def neighbour_overlap(ref: np.ndarray, got: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean |top-k(ref) ∩ top-k(got)| / k over the texts, each text excluded from its own list."""
    n = len(ref)
    if n < 2:
        return 1.0
    k = min(k, n - 1)
    total = 0.0
    a, b = _unit(ref), _unit(got)
    for start in range(0, n, 512):  # bounded memory: 512 x n similarities at a time
        rows = slice(start, min(start + 512, n))
        sa, sb = a[rows] @ a.T, b[rows] @ b.T
        idx = np.arange(rows.start, rows.stop)
        sa[idx - start, idx] = -np.inf
        sb[idx - start, idx] = -np.inf
        ta = np.argpartition(-sa, k - 1, axis=1)[:, :k]
        tb = np.argpartition(-sb, k - 1, axis=1)[:, :k]
        total += sum(len(set(x) & set(y)) for x, y in zip(ta.tolist(), tb.tolist()))
    return total / (n * k)


def compare(ref: np.ndarray, got: np.ndarray) -> Fidelity:
    """The :class:`Fidelity` of ``got`` against ``ref`` (rows are the same texts)."""
    if ref.shape != got.shape:
        raise ValueError(f"vector shapes differ: {ref.shape} and {got.shape}")
    cos = (_unit(ref) * _unit(got)).sum(axis=1)
    return Fidelity(
        mean=float(cos.mean()),
        min=float(cos.min()),
        p1=float(np.percentile(cos, 1)),
        top10=neighbour_overlap(ref, got),
    )
