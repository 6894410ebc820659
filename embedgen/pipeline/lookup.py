"""Stage 3: look chunks up in the cache; find the distinct misses.

Every chunk gets its cache key (model fingerprint + text). Hits are copied into the
window's vector matrix; of the misses, each distinct text is embedded once and its
repeats copy it. Runs that may mix models, or want sparse weights, do not read the cache
(a cached row carries a dense vector only), but may still write it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedgen.cache import cache_keys
from embedgen.pipeline.chunk import Chunk
from embedgen.pipeline.progress import Counters

log = logging.getLogger("embedgen")


@dataclass
class Held:
    """Chunks (a window's, or a block's on a Ray worker) looked up in the cache, waiting
    for their misses to be embedded."""

    chunks: list[Chunk]
    out: np.ndarray
    """One row per chunk: hits filled in, misses to fill."""
    extras: dict[str, list[Any]]
    """Extra output columns (sparse weights, model) per chunk."""
    keys: list[bytes] = field(default_factory=list)
    todo: list[int] = field(default_factory=list)
    """Chunks to embed: the first of each distinct missing text."""
    copies: list[tuple[int, int]] = field(default_factory=list)
    """(chunk, chunk it copies): repeats of a text missing earlier in the window."""


class Lookup:
    """Keys and cache hits for windows of one model (fingerprint id ``fp_id``)."""

    def __init__(
        self,
        cache: Any,
        fp_id: bytes,
        *,
        dim: int,
        read: bool = True,
        extra_columns: tuple[str, ...] = (),
    ) -> None:
        self.cache = cache
        self.fp_id = fp_id
        self.dim = dim
        self.read = read and cache is not None
        self.extra_columns = extra_columns
        self._warned = False

    def damaged(self) -> int:
        """Damaged cache values seen so far (ignored and recomputed), warned about once."""
        bad = int(self.cache.bad_reads) if self.cache is not None else 0
        if bad and not self._warned:
            self._warned = True
            log.warning(f"damaged values in the cache at {self.cache.path} are ignored and "
                        "recomputed; `embedgen cache verify --fix` removes them")  # fmt: skip
        return bad

    def keys(self, texts: list[str]) -> list[bytes]:
        return cache_keys(self.fp_id, texts)

    def hits(self, keys: list[bytes]) -> list[np.ndarray | None] | None:
        """Cached vectors by key (None where missing); None when the cache is not read."""
        return self.cache.get_many(self.fp_id, keys) if self.read else None

    def __call__(self, chunks: list[Chunk], counters: Counters) -> Held:
        out = np.empty((len(chunks), self.dim), dtype=np.float32)
        extras: dict[str, list[Any]] = {name: [None] * len(chunks) for name in self.extra_columns}
        held = Held(chunks, out, extras)
        if not chunks:
            return held
        held.keys = self.keys([c.text for c in chunks])
        hits = self.hits(held.keys)
        self.damaged()
        missing: list[int] = []
        for i in range(len(chunks)):
            if hits is not None and hits[i] is not None:
                out[i] = hits[i]
                counters.cached += 1
            else:
                missing.append(i)
        held.todo, held.copies = distinct(missing, held.keys)
        counters.duplicate += len(held.copies)
        return held


def distinct(rows: list[int], keys: list[bytes]) -> tuple[list[int], list[tuple[int, int]]]:
    """``rows`` without repeated keys, and (repeat, first row with its key) for the rest."""
    first: dict[bytes, int] = {}
    todo: list[int] = []
    repeats: list[tuple[int, int]] = []
    for i in rows:
        j = first.setdefault(keys[i], i)
        if j == i:
            todo.append(i)
        else:
            repeats.append((i, j))
    return todo, repeats
