"""Corpora and output comparisons shared by the cache and resume tests."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_SUBJECTS = [
    "The committee", "A small bakery", "Our neighbour", "The river", "This library",
    "The old lighthouse", "A young engineer", "The city council", "My grandmother",
    "The research team", "An orange cat", "The night train", "A local farmer", "The museum",
    "Every student", "The storm",
]  # fmt: skip
_VERBS = [
    "approved", "painted", "described", "flooded", "indexed", "guarded", "repaired",
    "announced", "remembered", "measured", "ignored", "delayed", "harvested", "displayed",
    "questioned", "scattered",
]  # fmt: skip
_OBJECTS = [
    "the new budget", "a bright mural", "the quiet garden", "the lower fields",
    "thousands of papers", "the rocky coast", "a broken pump", "the summer festival",
    "an old recipe", "the glacier's retreat", "a sleeping dog", "the morning commute",
    "a crop of pears", "a rare manuscript", "the final exam", "fallen leaves",
]  # fmt: skip
_TAILS = [
    "after a long debate", "before sunrise", "with great care", "during the winter",
    "in record time", "for the third year in a row", "despite the rain", "without any help",
    "on Tuesday", "by accident", "at the last minute", "as expected", "to everyone's surprise",
    "near the harbour", "under pressure", "in plain sight",
]  # fmt: skip

OUTPUT_COLUMNS = ("id", "chunk", "char_start", "char_end", "tokens", "text")


def sentences(n: int, *, seed: int = 0, avoid: set[str] | None = None) -> list[str]:
    """``n`` distinct short English sentences, deterministic for a seed."""
    rng = random.Random(seed)
    seen = set(avoid or ())
    out: list[str] = []
    for _ in range(100 * n + 1000):  # bounded; 65k combinations, many more with numbers
        if len(out) == n:
            break
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
        text += f"{rng.choice(_TAILS)}."
        if rng.random() < 0.3:
            text += f" It was number {rng.randint(1, 99_999)} on the list."
        if text not in seen:
            seen.add(text)
            out.append(text)
    if len(out) != n:
        raise RuntimeError(f"could only make {len(out)} distinct sentences")
    return out


def write_corpus(path: Path, ids: list[str], texts: list[str]) -> Path:
    """A Parquet corpus with ``doc`` and ``text`` columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc": ids, "text": texts}), path)
    return path


def read_output(path: Path) -> tuple[dict[str, list[Any]], np.ndarray]:
    """The plain columns of an output file and its embeddings as a float32 matrix."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in OUTPUT_COLUMNS}
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    vectors = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return columns, vectors.reshape(-1, dim)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference of two equally shaped matrices."""
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a - b).max()) if a.size else 0.0


def assert_same_output(path: Path, reference: Path, *, atol: float = 1e-6) -> None:
    """Same rows in the same order and vectors within ``atol`` of the reference file."""
    cols, vecs = read_output(path)
    ref_cols, ref_vecs = read_output(reference)
    for name in OUTPUT_COLUMNS:
        assert cols[name] == ref_cols[name], f"column {name} differs from {reference.name}"
    assert max_diff(vecs, ref_vecs) <= atol


def mount_tmpfs(target: Path, options: str) -> None:
    """Mount a small tmpfs at ``target`` (skips the test where that needs root we lack)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def cache_written(root: Path) -> int:
    """Bytes the caches under ``root`` hold on disk: data.mdb is kept as long as its map
    (a sparse file), so its size says nothing about how much has been committed."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("data.mdb"))
