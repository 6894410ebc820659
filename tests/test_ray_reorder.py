"""Reordering windows that Ray workers finish out of order (no Ray needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from embedgen.engines.reorder import Reorder
from embedgen.errors import EmbedgenError


def window(unit: int, win: int, n: int, last: bool) -> pa.Table:
    """A marker row then ``n`` chunk rows whose ``value`` encodes their key."""
    pos = [-1, *range(n)]
    return pa.table(
        {
            "_unit": pa.array([unit] * (n + 1), pa.int32()),
            "_win": pa.array([win] * (n + 1), pa.int32()),
            "_pos": pa.array(pos, pa.int32()),
            "_n": pa.array([n] + [0] * n, pa.int32()),
            "_last": pa.array([last] + [False] * n),
            "value": pa.array([f"{unit}/{win}/{p}" for p in pos]),
        }
    )


def corpus() -> list[pa.Table]:
    # unit 0: three windows; unit 1: one empty window (an empty file); unit 2: two windows
    return [
        window(0, 0, 5, False),
        window(0, 1, 3, False),
        window(0, 2, 4, True),
        window(1, 0, 0, True),
        window(2, 0, 6, False),
        window(2, 1, 2, True),
    ]


def pieces(tables: list[pa.Table], rng: random.Random) -> list[pa.Table]:
    """Split every window into random slices, some merged across windows, and shuffle."""
    out: list[pa.Table] = []
    for t in tables:
        cuts = sorted(rng.sample(range(1, t.num_rows), k=min(2, t.num_rows - 1)))
        bounds = [0, *cuts, t.num_rows]
        out.extend(t.slice(a, b - a) for a, b in zip(bounds, bounds[1:]))
    rng.shuffle(out)
    merged = [pa.concat_tables(out[i : i + 2]) for i in range(0, len(out) - 1, 3)]
    rest = [t for i, t in enumerate(out) if i % 3 == 2 or i == len(out) - 1 and i % 3 == 0]
    return merged + rest


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_bytes", [1 << 30, 1])
def test_windows_come_out_in_order(tmp_path: Path, seed: int, max_bytes: int) -> None:
    tables = corpus()
    rng = random.Random(seed)
    reorder = Reorder(3, tmp_path / "spill", max_bytes=max_bytes)
    got: list[str] = []
    for piece in pieces(tables, rng):
        for w in reorder.add(piece):
            got.extend(w.column("value").to_pylist())
    reorder.check_finished()
    assert got == [v for t in tables for v in t.column("value").to_pylist()]
    assert not list((tmp_path / "spill").glob("*")) if (tmp_path / "spill").exists() else True
    if max_bytes == 1:
        assert reorder.peak_bytes > 0


def test_a_missing_window_is_an_error(tmp_path: Path) -> None:
    reorder = Reorder(1, tmp_path)
    list(reorder.add(window(0, 0, 2, False)))
    list(reorder.add(window(0, 2, 2, True)))
    with pytest.raises(EmbedgenError, match="windows missing"):
        reorder.check_finished()
