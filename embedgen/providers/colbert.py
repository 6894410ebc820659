"""BGE-M3's ColBERT multi-vectors, as FlagEmbedding computes them, in numpy only.

``colbert_linear`` (a Linear(hidden, dim) layer shipped as ``colbert_linear.pt``) maps
every token state but the first (CLS) to a vector; padding is dropped and each vector is
L2-normalised when the model normalises. A text of n tokens (special tokens included)
gets n - 1 vectors, from the same forward pass as its dense vector and sparse weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedgen.errors import ModelError
from embedgen.providers.sparse import read_linear


@dataclass(frozen=True)
class ColbertHead:
    weight: np.ndarray
    """float32, shape (dim, hidden), as torch stores a Linear's weight."""
    bias: np.ndarray
    """float32, shape (dim,)."""

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])


def load_colbert_head(path: Path) -> ColbertHead:
    """Read ``colbert_linear`` from a safetensors, npz or torch file."""
    weight, bias = read_linear(path, "colbert head")
    if weight.ndim != 2:
        raise ModelError(f"{path}: colbert head weight must be (dim, hidden), got {weight.shape}")
    b = np.zeros(weight.shape[0], np.float32) if bias is None else bias.astype(np.float32)
    if b.shape != (weight.shape[0],):
        raise ModelError(f"{path}: colbert head bias {b.shape} does not match {weight.shape}")
    return ColbertHead(weight=weight, bias=b)


def colbert_vectors(
    hidden: np.ndarray, mask: np.ndarray, head: ColbertHead, *, normalize: bool = True
) -> list[np.ndarray]:
    """Per text, its (tokens - 1, dim) float32 vectors: ``hidden[1:n] @ w.T + b``."""
    if hidden.ndim != 3 or hidden.shape[-1] != head.weight.shape[1]:
        raise ModelError(
            f"colbert head expects token states of width {head.weight.shape[1]}, "
            f"got shape {tuple(hidden.shape)}"
        )
    out: list[np.ndarray] = []
    lengths = np.asarray(mask).sum(axis=1)
    for states, n in zip(hidden, lengths.tolist(), strict=True):
        vecs = states[1 : int(n)].astype(np.float32) @ head.weight.T + head.bias
        if normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        out.append(np.ascontiguousarray(vecs, dtype=np.float32))
    return out
