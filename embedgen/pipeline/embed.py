"""Stage 4: embed the misses: batch them, send them through the router, check the results.

Misses are cut into length-sorted batches under the chain's request limits (padded
tokens and attention for a local model), sent with up to ``max_concurrency`` requests
in flight, and handed back in order. Every result is checked (count, dimension, finite
values, the extra columns asked for) before anything caches or writes it: a bad reply
is a provider failure, never output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedgen.errors import EmbedgenError, ProviderError
from embedgen.pipeline.batch import plan_batches
from embedgen.pipeline.chunk import Chunk
from embedgen.providers.base import Batch, EmbedResult
from embedgen.router import Router

RESULT_FIELD = {"sparse": "sparse", "colbert": "colbert", "model": "models"}
"""Extra output column -> the EmbedResult field that fills it."""


@dataclass
class Embedded:
    """One embedded batch: which chunks, their checked vectors, extra column values."""

    rows: list[int]
    vectors: np.ndarray
    extras: dict[str, list[Any]]


class Embedder:
    """Embeds chunks with the run's router."""

    def __init__(self, router: Router, extra_columns: Sequence[str] = ()) -> None:
        self.router = router
        self.info = router.info
        self.overhead = router.tokenizer().overhead
        self.extra_columns = tuple(extra_columns)

    def batches(self, chunks: Sequence[Chunk], todo: Sequence[int]) -> list[list[int]]:
        """``todo`` (indexes into ``chunks``) cut into request batches."""
        lengths = [len(chunks[i].input_ids or ()) or chunks[i].tokens + self.overhead for i in todo]
        plan = plan_batches(
            lengths,
            max_items=self.info.max_batch_inputs,
            max_tokens=self.info.max_batch_tokens,
            padded=self.info.kind == "onnx",
        )
        return [[todo[j] for j in idx] for idx in plan]

    def embed(self, chunks: Sequence[Chunk], todo: Sequence[int]) -> Iterator[Embedded]:
        """The chunks ``todo`` embedded, batch by batch, in order."""
        for rows, result in self._results(chunks, self.batches(chunks, todo)):
            vecs = checked(result.vectors, len(rows), self.info.dim, self.info.name)
            extras: dict[str, list[Any]] = {}
            for name in self.extra_columns:
                values = getattr(result, RESULT_FIELD[name])
                if values is None or len(values) != len(rows):
                    raise ProviderError(f"{self.info.name} returned no {name} for a batch")
                extras[name] = list(values)
            yield Embedded(rows, vecs, extras)

    def _batch(self, chunks: Sequence[Chunk], rows: list[int]) -> Batch:
        # chunks rebuilt from document records carry no ids: the provider tokenizes them
        with_ids = all(chunks[i].input_ids is not None for i in rows)
        return Batch(
            texts=[chunks[i].text for i in rows],
            token_counts=[chunks[i].tokens + self.overhead for i in rows],
            input_ids=[chunks[i].input_ids for i in rows] if with_ids else None,  # type: ignore[misc]
        )

    def _results(
        self, chunks: Sequence[Chunk], batches: list[list[int]]
    ) -> Iterator[tuple[list[int], EmbedResult]]:
        """Embedded batches, in order; up to ``max_concurrency`` requests in flight."""

        def one(rows: list[int]) -> EmbedResult:
            return self.router.embed(self._batch(chunks, rows))

        workers = max(1, self.info.max_concurrency)
        if workers == 1 or len(batches) == 1:
            for rows in batches:
                yield rows, one(rows)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="embedgen-req") as pool:
            futures = [(rows, pool.submit(one, rows)) for rows in batches]
            try:
                failure: EmbedgenError | None = None
                for rows, fut in futures:
                    if failure is not None and fut.cancel():
                        continue
                    try:
                        result = fut.result()
                    except EmbedgenError as exc:
                        # batches already sent are paid for: let them reach the cache first,
                        # but start no more (each could wait out a breaker's recovery)
                        failure = failure or exc
                        for _, queued in futures:
                            queued.cancel()
                        continue
                    yield rows, result
                if failure is not None:
                    raise failure
            finally:
                for _, fut in futures:
                    fut.cancel()


def checked(vectors: Any, n: int, dim: int, name: str) -> np.ndarray:
    """Refuse a malformed result: wrong count or dimension, NaN or infinity."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.shape != (n, dim):
        raise ProviderError(f"{name} returned shape {arr.shape}, expected ({n}, {dim})")
    if not np.isfinite(arr).all():
        raise ProviderError(f"{name} returned non-finite values (NaN or infinity)")
    return arr
