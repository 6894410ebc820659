"""Reading a target back: its metadata, and the rows nearest a query vector.

A Parquet file or dataset is scanned in record batches (bounded memory) and scored with
numpy; LanceDB and pgvector answer with their own search (their index, when built). Scores
are cosine similarities, best first.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.errors import InputError, UsageError
from embedgen.pipeline.vectors import to_float
from embedgen.sinks import Target, open_sink
from embedgen.sinks.base import META_KEY, load_metadata

SHOWN = ("id", "chunk", "text")


def target_metadata(target: Target) -> dict[str, str]:
    """The run metadata a target keeps (model, fingerprint, dim, dtype, chunking...)."""
    if target.kind == "parquet":
        meta = load_metadata((_dataset(target).schema.metadata or {}).get(META_KEY.encode()))
    else:
        sink = open_sink(target)
        try:
            found = sink.table_metadata()
        finally:
            sink.close()
        if found is None:
            raise InputError(f"{target} has no table {target.table!r}")
        meta = found[0]
    if not meta.get("fingerprint"):
        raise InputError(f"{target} was not written by embedgen (no model metadata)")
    return meta


def nearest(target: Target, query: np.ndarray, k: int, where: str | None) -> list[dict[str, Any]]:
    """The ``k`` rows most similar to ``query``: id, chunk, score, text (when kept)."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    q = q / (np.linalg.norm(q) or 1.0)
    if target.kind == "parquet":
        if where:
            raise UsageError("--filter needs a LanceDB or PostgreSQL target")
        return _parquet_nearest(target, q, k)
    if target.kind == "lancedb":
        return _lance_nearest(target, q, k, where)
    return _pg_nearest(target, q, k, where)


def _dataset(target: Target) -> Any:
    import pyarrow.dataset as ds

    path = Path(target.location)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        return ds.dataset(path, format="parquet")
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"cannot read {path} as Parquet: {exc}") from None


def _parquet_nearest(target: Target, q: np.ndarray, k: int) -> list[dict[str, Any]]:
    dataset = _dataset(target)
    names = dataset.schema.names
    columns = [c for c in SHOWN if c in names] + ["embedding"]
    best: list[tuple[float, int, dict[str, Any]]] = []  # a min-heap of the k best
    seq = 0
    for batch in dataset.to_batches(columns=columns, batch_size=8192):
        matrix = to_float(batch.column("embedding"), dataset.schema.metadata)
        norms = np.linalg.norm(matrix, axis=1)
        scores = (matrix @ q) / np.where(norms == 0, 1.0, norms)
        top = np.argsort(-scores)[:k]
        rows = batch.select([c for c in columns if c != "embedding"]).take(top).to_pylist()
        for i, row in zip(top, rows):
            seq += 1
            item = (float(scores[i]), -seq, {**row, "score": float(scores[i])})
            if len(best) < k:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
    return [r for _, _, r in sorted(best, reverse=True)]


def _lance_nearest(target: Target, q: np.ndarray, k: int, where: str | None) -> list[dict]:
    from embedgen.sinks.lance import LanceSink

    sink = LanceSink(target.location, target.table)
    table = sink.table_handle()
    names = table.schema.names
    search = table.search(q, vector_column_name="embedding").distance_type("cosine").limit(k)
    if where:
        search = search.where(where, prefilter=True)
    try:
        found = search.select([c for c in SHOWN if c in names] + ["_distance"]).to_arrow()
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--filter {where!r}: {exc}") from None
    out = []
    for row in found.to_pylist():
        distance = row.pop("_distance")
        out.append({**row, "score": 1.0 - float(distance)})
    return out


def _pg_nearest(target: Target, q: np.ndarray, k: int, where: str | None) -> list[dict]:
    from embedgen.sinks.pg import PgSink

    sink = PgSink(target.location, target.table)
    try:
        return sink.nearest(q, k, where)
    finally:
        sink.close()
