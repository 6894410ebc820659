"""Stage 5: store embedded batches in the cache, before their rows are written.

Puts run on one background thread so the next batch embeds meanwhile; at most two
batches are computed but not yet committed, which bounds what a kill can lose.
:meth:`Store.wait` is called before a window's rows are written, so every written row is
in the cache: re-running after a crash recomputes nothing that reached the output.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

IN_FLIGHT = 2
"""Batches computed but not yet committed to the cache, at most."""


class Store:
    def __init__(self, cache: Any, fp_id: bytes, *, enabled: bool = True) -> None:
        self.cache = cache
        self.fp_id = fp_id
        self.enabled = enabled and cache is not None
        self._puts: list[Future[Any]] = []
        self.committed = 0
        """Chunks whose vectors are committed to the cache (what a re-run will not redo)."""
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="embedgen-cache") if self.enabled else None
        )

    def put(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Commit ``vectors`` under ``keys`` in the background (waits while two are pending)."""
        if self._pool is None:
            return
        while len(self._puts) >= IN_FLIGHT:
            self._puts.pop(0).result()
        fut = self._pool.submit(self._put, keys, vectors)
        self._puts.append(fut)

    def _put(self, keys: list[bytes], vectors: np.ndarray) -> None:
        self.cache.put_many(self.fp_id, keys, vectors)
        self.committed += len(keys)  # one pool thread: never races

    def wait(self) -> None:
        """Every put so far is committed (re-raises a put's error)."""
        puts, self._puts = self._puts, []
        for fut in puts:
            fut.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
