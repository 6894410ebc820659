"""Content-hash cache of embedding vectors in LMDB: what makes runs resumable and incremental.

- :mod:`~embedgen.cache.keys`: fingerprint ids, cache keys, where the cache lives.
- :mod:`~embedgen.cache.records`: the frozen records the cache stores and reports.
- :mod:`~embedgen.cache.seal`: the checksum every stored value carries.
- :mod:`~embedgen.cache.env`: the LMDB environment, its shared lock and error mapping.
- :mod:`~embedgen.cache.store`: :class:`VectorCache`, what a run reads and writes.
- :mod:`~embedgen.cache.admin`: :class:`CacheAdmin`, stats, verify and clear.

The cache sits below pipeline, budget and providers and imports none of them. ``lmdb``
is imported only when a cache is opened.
"""

from __future__ import annotations

from embedgen.cache.admin import CacheAdmin
from embedgen.cache.keys import (
    cache_key,
    cache_keys,
    default_cache_dir,
    doc_keys,
    fingerprint_id,
    resolve_cache_dir,
)
from embedgen.cache.records import ModelInfo, ModelStats, VerifyReport
from embedgen.cache.store import VectorCache

__all__ = [
    "CacheAdmin",
    "ModelInfo",
    "ModelStats",
    "VectorCache",
    "VerifyReport",
    "cache_key",
    "cache_keys",
    "default_cache_dir",
    "doc_keys",
    "fingerprint_id",
    "resolve_cache_dir",
]
