"""What each output choice costs in retrieval: recall@10 of every type x dimension.

``embedgen eval`` samples chunks of the user's corpus (:func:`sample_chunks`), embeds them
once in float32, and holds every tenth out as a query. The truth is each query's ten
nearest documents by the full float32 vectors. Each output type and dimension is then
searched the way a reader of the written file would: documents *and* queries written in
that type (int8/uint8 ranges fitted on the documents, Matryoshka cuts renormalised, as
``run --dimensions`` does) and read back with :func:`embedgen.util.quantize.decode`,
scored by dot product (binary: +-1 per bit, so the order of Hamming distance). With
rescoring, the top :data:`RESCORE_TOP` by that score are re-ranked by the full float32
vectors, as kept in the cache. Ties go to the earlier document, so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.errors import InputError
from embedgen.util.quantize import VECTOR_DTYPES, Ranges, bytes_per_vector, decode, encode

K = 10
RESCORE_TOP = 40
QUERY_EVERY = 10
"""Every tenth sampled chunk (in sample order) is a query, the rest are documents."""
CUTS = (1024, 768, 512, 256, 128, 64)
"""Matryoshka dimensions tried below the model's own."""


@dataclass(frozen=True)
class Row:
    """One line of the report (``--json`` prints a list of these)."""

    model: str
    dtype: str
    dimensions: int
    rescore: bool
    recall_at_10: float
    bytes_per_vector: int
    reference: str
    """What the recall is measured against."""
    chunks_per_second: float | None = None
    """Model rows: embedding speed on this machine."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sample_chunks(chunks: Iterable[str], n: int) -> list[str]:
    """The ``n`` distinct chunk texts with the smallest blake2b digests, in digest order.

    The choice depends on the texts only (not on their order or on a seed), so the same
    corpus gives the same sample on every run and machine.
    """
    heap: list[tuple[bytes, str]] = []  # max-heap of the n smallest, by negated digest
    seen: set[bytes] = set()
    for text in chunks:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in seen:
            continue
        key = bytes(255 - b for b in digest)
        if len(heap) < n:
            heapq.heappush(heap, (key, text))
            seen.add(digest)
        elif key > heap[0][0]:
            dropped = heapq.heapreplace(heap, (key, text))
            seen.discard(bytes(255 - b for b in dropped[0]))
            seen.add(digest)
    return [text for _, text in sorted(heap, reverse=True)]


def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, document rows) of a sample of ``n``."""
    rows = np.arange(n)
    queries = rows[rows % QUERY_EVERY == 0]
    if len(queries) < 1 or n - len(queries) < RESCORE_TOP:
        raise InputError(
            f"the sample has {n} distinct chunks; eval needs at least "
            f"{RESCORE_TOP + RESCORE_TOP // (QUERY_EVERY - 1) + 2}"
        )
    return queries, rows[rows % QUERY_EVERY != 0]


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the ``k`` highest scores, best first, ties to the lower column."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top ``K`` among its found top ``K``."""
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return round(hits / truth.size, 6)


def cut(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` dimensions, renormalised (what ``run --dimensions`` writes)."""
    part = vectors[:, :dim].astype(np.float64)
    norms = np.linalg.norm(part, axis=1, keepdims=True)
    return (part / np.where(norms > 0, norms, 1)).astype(np.float32)


def dimensions_for(full: int) -> list[int]:
    """The full dimension, then every :data:`CUTS` below it."""
    return [full] + [d for d in CUTS if d < full]


def grid(vectors: np.ndarray, model: str) -> list[Row]:
    """Recall@10 of every output type x dimension against float32 at full dimension."""
    vectors = np.asarray(vectors, dtype=np.float32)
    queries, docs = split(len(vectors))
    full = vectors.astype(np.float64)
    exact = full[queries] @ full[docs].T
    truth = top(exact, K)
    rows = []
    for dim in dimensions_for(vectors.shape[1]):
        part = cut(vectors, dim) if dim < vectors.shape[1] else vectors
        for dtype in VECTOR_DTYPES:
            if dtype in ("binary", "ubinary") and dim % 8:
                continue
            ranges = Ranges.fit(part[docs], "documents") if dtype in ("int8", "uint8") else None
            back = decode(encode(part, dtype, ranges), dtype, ranges).astype(np.float64)
            scores = back[queries] @ back[docs].T
            plain = recall(top(scores, K), truth)
            shortlist = top(scores, RESCORE_TOP)
            again = np.take_along_axis(exact, shortlist, axis=1)
            rescored = np.take_along_axis(shortlist, top(again, K), axis=1)
            size = bytes_per_vector(dtype, dim)
            reference = "float32 at full dimension"
            rows.append(Row(model, dtype, dim, False, plain, size, reference))
            rows.append(Row(model, dtype, dim, True, recall(rescored, truth), size, reference))
    return rows


def model_row(variant: np.ndarray, original: np.ndarray, model: str, speed: float) -> Row:
    """Recall@10 of a model variant's float32 vectors against the original model's."""
    queries, docs = split(len(original))
    truth = top(original[queries].astype(np.float64) @ original[docs].T.astype(np.float64), K)
    v = variant.astype(np.float64)
    found = top(v[queries] @ v[docs].T, K)
    size = bytes_per_vector("float32", variant.shape[1])
    return Row(model, "float32", variant.shape[1], False, recall(found, truth), size,
               "the packaged original model, float32", round(speed, 1))  # fmt: skip


def corpus_chunks(paths: list[Path], chunker: Any, run: Any) -> Iterable[str]:
    """Every chunk text of the corpus, read and chunked the way ``embedgen run`` does."""
    from embedgen.pipeline.windows import Windows, read_options

    for window in Windows(chunker, read_options(run), run.limit, None)(paths):
        for chunk in window.chunks:
            yield chunk.text


def evaluate(
    input: str, *, model: str | None = None, sample: int = 2000, config: Any = None,
    text_column: str | None = None,
) -> list[Row]:  # fmt: skip
    """The report of ``embedgen eval``: the grid, then the model variant's rows if any."""
    from embedgen.models.local import DEFAULT_NAMES, original_default_model, resolve_model
    from embedgen.optimize.measure import SampleRunner, race
    from embedgen.pipeline.read import discover_inputs
    from embedgen.pipeline.spec import resolve_config
    from embedgen.pipeline.windows import make_chunker

    cfg = resolve_config(config, model, {"text_column": text_column} if text_column else {})
    spec = resolve_model(cfg.model.model)
    probe = SampleRunner(spec, [])
    try:
        tok = probe.provider.tokenizer()
        chunker = make_chunker(tok, probe.provider.info, cfg.run)
        texts = sample_chunks(corpus_chunks(discover_inputs(input), chunker, cfg.run), sample)
    finally:
        probe.close()
    split(len(texts))  # too small a sample: say so before embedding it
    runners = [SampleRunner(spec, texts)]
    if cfg.model.model in DEFAULT_NAMES:
        runners.append(SampleRunner(original_default_model(), texts))
    try:
        vectors = [r.vectors() for r in runners]
        race(runners, rounds=1)
        rows = grid(vectors[0], spec.name)
        if len(runners) == 2:
            variant = f"{spec.name} (int8 model variant)"
            rows.append(model_row(vectors[0], vectors[1], variant, runners[0].chunks_per_s))
            original = f"{runners[1].provider.info.model} (packaged original)"
            rows.append(model_row(vectors[1], vectors[1], original, runners[1].chunks_per_s))
    finally:
        for r in runners:
            r.close()
    return rows


def plot(rows: list[Row], path: Path) -> None:
    """Recall@10 against bytes per vector: hollow markers as written, filled ones rescored."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from embedgen.errors import UsageError

        raise UsageError("--plot needs matplotlib: pip install 'embedgen[plot]'") from None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    grid_rows = [r for r in rows if r.reference.startswith("float32 at full")]
    for i, dtype in enumerate(("float32", "float16", "int8", "binary")):  # uint8/ubinary: alike
        for rescore in (False, True):
            pts = [r for r in grid_rows if r.dtype == dtype and r.rescore == rescore]
            fill = f"C{i}" if rescore else "none"
            ax.scatter([p.bytes_per_vector for p in pts], [p.recall_at_10 for p in pts],
                       label=f"{dtype}{' + rescore' if rescore else ''}",
                       edgecolors=f"C{i}", facecolors=fill)  # fmt: skip
            for p in pts:
                ax.annotate(str(p.dimensions), (p.bytes_per_vector, p.recall_at_10),
                            fontsize=6, xytext=(3, 2), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector")
    ax.set_ylabel(f"recall@{K} against float32, full dimension")
    ax.set_title(f"{grid_rows[0].model if grid_rows else ''}: what each output choice keeps")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
