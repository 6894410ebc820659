"""The run core every engine shares: the stages after chunking, and one fill of held chunks.

::

    stages = Stages.build(run, router, cache)   # lookup, embedder, store of one model
    held = [stages.lookup(chunks, counters) for chunks in ...]
    filled = stages.fill(held, counters)        # embed the misses -> store -> copy repeats

The local engine fills the windows it holds together; a Ray worker fills the block of
chunk rows it was sent. Both build their stages here and fill them here, so a stage
added after chunking is composed in one place (:class:`Stages`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from embedgen.pipeline.lookup import Held, Lookup, distinct
from embedgen.pipeline.progress import Counters
from embedgen.pipeline.spec import extra_columns
from embedgen.pipeline.store import Store

if TYPE_CHECKING:
    from embedgen.config import RunConfig
    from embedgen.pipeline.chunk import Chunker
    from embedgen.pipeline.docindex import DocIndex
    from embedgen.pipeline.embed import Embedder
    from embedgen.router import Router

log = logging.getLogger("embedgen")


def doc_index(run: RunConfig, cache: Any, fp_id: bytes, chunker: Chunker) -> DocIndex | None:
    """The document index of model ``fp_id`` in ``cache``; None where a run cannot use it
    (no cache, sparse or ColBERT heads, a chain that may mix models)."""
    if cache is None or run.sparse or run.colbert or "model" in extra_columns(run):
        return None
    from embedgen.pipeline.docindex import DocIndex

    return DocIndex(cache, fp_id, chunker)


@dataclass
class Filled:
    """Held chunks with every vector in place: ``out`` and ``extras`` span all of them,
    part ``k`` (the ``k``-th Held) is rows ``starts[k]:starts[k + 1]``."""

    out: np.ndarray
    extras: dict[str, list[Any]]
    starts: list[int]
    todo: list[int]
    """Rows that were embedded (not cached, not a repeat), over all parts."""

    def part(self, k: int) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """Vectors and extra column values of the ``k``-th part."""
        a, b = self.starts[k], self.starts[k + 1]
        return self.out[a:b], {n: values[a:b] for n, values in self.extras.items()}


@dataclass
class Stages:
    """Look up, embed, store: the stages of one model after chunking, for any engine."""

    router: Router
    cache: Any
    columns: tuple[str, ...]
    """Extra output columns (sparse weights, model)."""
    fp_id: bytes
    lookup: Lookup
    embedder: Embedder
    store: Store

    @classmethod
    def build(cls, run: RunConfig, router: Router, cache: Any) -> Stages:
        """The stages of ``run`` with ``router``; ``cache`` is None when the cache is off."""
        from embedgen.cache import fingerprint_id
        from embedgen.pipeline.embed import Embedder

        info = router.info
        columns = extra_columns(run)
        mixed = "model" in columns
        if mixed and cache is not None:
            log.warning("allow_mixed_models: the vector cache is not used for this run")
        fp_id = fingerprint_id(info.fingerprint)
        # Cached rows carry a dense vector only: sparse and ColBERT runs recompute (and store) every
        # chunk; runs that may mix models keep the cache out of it, so no row is misattributed.
        heads = run.sparse or run.colbert
        lookup = Lookup(
            cache, fp_id, dim=info.dim, read=not heads and not mixed, extra_columns=columns
        )
        if cache is not None:
            cache.register_model(fp_id, info.fingerprint, info.model, info.dim, run.dtype,
                                 normalized=info.unit_vectors)  # fmt: skip
        store = Store(cache, fp_id, enabled=not mixed)
        return cls(router, cache, columns, fp_id, lookup, Embedder(router, columns), store)

    def doc_index(self, run: RunConfig, chunker: Chunker) -> DocIndex | None:
        """The document index (unchanged documents are not tokenized again), where usable."""
        return doc_index(run, self.cache, self.fp_id, chunker)

    def fill(self, held: list[Held], counters: Counters) -> Filled:
        """Embed the misses of every part together, store them, then copy repeats.

        Every vector is committed to the cache before this returns, so rows written from
        the result are never ahead of the cache.
        """
        chunks = [c for h in held for c in h.chunks]
        keys = [k for h in held for k in h.keys]
        starts = np.cumsum([0] + [len(h.chunks) for h in held]).tolist()
        todo, repeats = distinct(
            [start + i for h, start in zip(held, starts) for i in h.todo], keys
        )
        out = np.concatenate([h.out for h in held]) if len(held) != 1 else held[0].out
        extras = {n: [v for h in held for v in h.extras[n]] for n in self.columns}
        for done in self.embedder.embed(chunks, todo):
            out[done.rows] = done.vectors
            for name, values in done.extras.items():
                for i, value in zip(done.rows, values):
                    extras[name][i] = value
            counters.computed += len(done.rows)
            self.store.put([keys[i] for i in done.rows], done.vectors)
        self.store.wait()
        counters.duplicate += len(repeats)  # a text missing from two held parts: once
        # repeats first: a part's first copy of a text may itself repeat an earlier part's
        copies = repeats + [(s + i, s + j) for h, s in zip(held, starts) for i, j in h.copies]
        for i, j in copies:
            out[i] = out[j]
            for values in extras.values():
                values[i] = values[j]
        return Filled(out, extras, starts, todo)

    def close(self) -> None:
        self.store.close()
