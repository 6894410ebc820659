"""The vector store: what a run reads and writes.

One LMDB environment (a directory) holds three sub-databases:

- ``vectors``: key = :func:`~embedgen.cache.keys.cache_key`, value = the raw vector bytes in
  the model's registered dtype.
- ``models``: fingerprint id -> JSON ``{description, name, dim, dtype, created, normalized}``.
- ``meta``: ``last_run`` -> JSON ``{hits, misses, fingerprint, model, finished}``,
  ``used:<fingerprint id>`` -> when a run last used that model (UTC, ISO 8601, for
  ``cache prune``), and the document records of :mod:`~embedgen.pipeline.docindex`.

Every value carries a checksum over its key and bytes (:mod:`~embedgen.cache.seal`). A
value whose check fails, or that does not decode to a vector of the registered dim with a
norm the model can produce, is a miss (counted in :attr:`VectorCache.bad_reads`), never a
result. The map grows by itself when it fills, and a map grown by another process is adopted.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedgen.cache.env import (
    ENVS,
    ENVS_LOCK,
    INITIAL_MAP_SIZE,
    MAX_GROW_STEP,
    MAX_RETRIES,
    SharedEnv,
    map_error,
    open_env,
)
from embedgen.cache.keys import check_id, check_keys, resolve_cache_dir
from embedgen.cache.records import DTYPES, ModelInfo
from embedgen.cache.seal import CHECK_BYTES, CHECK_RESIDUE, doc_record, record, seal
from embedgen.errors import CacheError

T = TypeVar("T")
_C = TypeVar("_C", bound="VectorCache")
LAST_RUN = b"last_run"
USED = b"used:"
"""``used:`` + fingerprint id -> when a run last used the model (for ``cache prune``)."""


class VectorCache:
    """Vectors by content hash, per model. Use :meth:`open`; close it (or use ``with``)."""

    def __init__(self, shared: SharedEnv, readonly: bool) -> None:
        self._shared = shared
        self.readonly = readonly
        self._models: dict[bytes, ModelInfo] = {}
        self._closed = False
        self.bad_reads = 0
        """Damaged values this handle read and ignored: a failed checksum, the wrong size, a
        vector not finite or of a norm its model cannot make, a damaged document record."""

    @classmethod
    def open(
        cls: type[_C], path: str | os.PathLike[str] | None = None, *, readonly: bool = False,
        initial_map_size: int = INITIAL_MAP_SIZE,
    ) -> _C:  # fmt: skip
        """Open the cache at ``path`` (default: the default cache dir), creating it."""
        where = resolve_cache_dir(path)
        key = (os.getpid(), os.path.realpath(where))
        with ENVS_LOCK:
            shared = ENVS.get(key)
            if shared is not None and shared.readonly and not readonly:
                raise CacheError(f"cache at {where} is already open read-only in this process")
            if shared is None:
                shared = open_env(where, readonly, initial_map_size)
                ENVS[key] = shared
            shared.refs += 1
        return cls(shared, readonly)

    def close(self) -> None:
        """Release this handle; the environment closes with its last handle in the process."""
        if self._closed:
            return
        self._closed = True
        with ENVS_LOCK:
            self._shared.refs -= 1
            if self._shared.refs == 0:
                for key, value in list(ENVS.items()):
                    if value is self._shared:
                        del ENVS[key]
                with self._shared.exclusive():
                    self._shared.env.close()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._shared.path

    @property
    def map_size(self) -> int:
        return int(self._shared.env.info()["map_size"])

    @property
    def map_events(self) -> dict[str, int]:
        """How often this process grew the map, and adopted a map grown by another process."""
        return {"grown": self._shared.grown, "adopted": self._shared.adopted}

    # -- transactions -------------------------------------------------------------------

    def _txn(self, fn: Callable[[Any], T], *, write: bool = False, buffers: bool = False) -> T:
        """Run ``fn(txn)`` in one transaction, growing or adopting the map and retrying."""
        import lmdb

        if self._closed:
            raise CacheError(f"cache at {self.path} is closed")
        if write and self.readonly:
            raise CacheError(f"cache at {self.path} is open read-only")
        shared = self._shared
        for _ in range(MAX_RETRIES):
            fix = "grow"
            with shared.write_lock if write else _nothing():
                with shared.shared():
                    size = shared.env.info()["map_size"]
                    try:
                        with shared.env.begin(write=write, buffers=buffers) as txn:
                            if write:
                                shared.cover()
                            return fn(txn)
                    except lmdb.MapResizedError:
                        fix = "adopt"
                    except lmdb.MapFullError:
                        fix = "grow"
                    except (lmdb.Error, OSError) as exc:
                        raise map_error(exc, self.path) from exc
                try:
                    with shared.exclusive():
                        if fix == "adopt":
                            shared.env.set_mapsize(0)
                            shared.adopted += 1
                        elif shared.env.info()["map_size"] == size:
                            shared.env.set_mapsize(size + min(size, MAX_GROW_STEP))
                            shared.grown += 1
                except (lmdb.Error, OSError) as exc:
                    raise map_error(exc, self.path) from exc
        raise CacheError(f"cache at {self.path} kept running out of map space; use --no-cache")

    def _model_in(self, txn: Any, fingerprint: bytes) -> ModelInfo | None:
        raw = txn.get(fingerprint, db=self._shared.models)
        return None if raw is None else ModelInfo.from_json(fingerprint, record(fingerprint, raw))

    # -- models ---------------------------------------------------------------------------

    def register_model(
        self, fingerprint: bytes, description: str, name: str, dim: int, dtype: str = "float32",
        *, normalized: bool = False,
    ) -> ModelInfo:  # fmt: skip
        """Record a model's fingerprint, so lookups know its dim, dtype and whether its vectors
        have unit length, and stats its name."""
        check_id(fingerprint)
        if dtype not in DTYPES or dim <= 0:
            raise ValueError(f"cache stores float32 or float16 vectors of dim > 0, got {dtype}")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = ModelInfo(fingerprint, description, name, int(dim), dtype, created, normalized)

        def write(txn: Any) -> ModelInfo:
            old = self._model_in(txn, fingerprint)
            if old is not None and (old.dim, old.dtype) != (info.dim, info.dtype):
                raise ValueError(
                    f"fingerprint {fingerprint.hex()} is registered with dim {old.dim} "
                    f"{old.dtype}; the fingerprint must cover dim and dtype"
                )
            keep = info if old is None else replace(info, created=old.created)
            sealed = seal(fingerprint, keep.to_json())
            if txn.get(fingerprint, db=self._shared.models) != sealed:  # new, changed or old
                txn.put(fingerprint, sealed, db=self._shared.models)
            return keep

        self._models[fingerprint] = self._txn(write, write=True)
        return self._models[fingerprint]

    def models(self) -> list[ModelInfo]:
        """Registered models (damaged records are left out; ``verify`` reports them)."""

        def read(txn: Any) -> list[ModelInfo]:
            found = (ModelInfo.from_json(k, record(k, v))
                     for k, v in txn.cursor(db=self._shared.models))  # fmt: skip
            return [m for m in found if m is not None]

        return self._txn(read)

    # -- vectors --------------------------------------------------------------------------

    def get_many(self, fingerprint: bytes, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        """Cached vectors for ``keys`` (None for a miss), all read in one transaction.

        A value whose checksum fails, of the wrong size, or not a vector the model can make
        (:meth:`ModelInfo.plausible`) is a miss, counted in :attr:`bad_reads`. Values written
        before checksums (exactly the vector's size) are read with the vector check only.
        Hits are float arrays of the registered dtype.
        """
        check_keys(fingerprint, keys)
        vectors_db = self._shared.vectors

        def read(txn: Any) -> tuple[ModelInfo | None, list[int], np.ndarray | None, int]:
            # buffers: a value's length is checked before its bytes are touched, so a length
            # that damage made huge is never copied out of the map
            info = self._model_in(txn, fingerprint)
            if info is None:
                return None, [], None, 0
            size = info.nbytes
            sealed = size + CHECK_BYTES
            get, crc32 = txn.get, zlib.crc32
            rows: tuple[list[int], list[int]] = ([], [])  # sealed, written before checksums
            parts: tuple[list[Any], list[Any]] = ([], [])
            bad = 0
            for i, key in enumerate(keys):
                value = get(key, db=vectors_db)
                if value is None:
                    continue
                n = len(value)
                if n == sealed:  # the check over key + payload + its check: one constant
                    if crc32(value, crc32(key)) != CHECK_RESIDUE:
                        bad += 1
                        continue
                    rows[0].append(i)
                    parts[0].append(value)
                elif n == size:
                    rows[1].append(i)
                    parts[1].append(value)
                else:
                    bad += 1
            blocks = [
                np.frombuffer(b"".join(part), np.uint8).reshape(len(part), width)[:, :size]
                for part, width in zip(parts, (sealed, size))
                if part
            ]
            if not blocks:
                return info, [], None, bad
            return info, rows[0] + rows[1], np.concatenate(blocks), bad

        info, found, raw, bad = self._txn(read, buffers=True)
        self.bad_reads += bad
        out: list[np.ndarray | None] = [None] * len(keys)
        if info is None or raw is None:
            return out
        matrix = raw.view(DTYPES[info.dtype]).reshape(len(found), info.dim)  # concatenated: C order
        ok = info.plausible(matrix)
        self.bad_reads += int((~ok).sum())
        for row, i in enumerate(found):
            if ok[row]:
                out[i] = matrix[row]
        return out

    def put_many(self, fingerprint: bytes, keys: Sequence[bytes], vectors: np.ndarray) -> int:
        """Store vectors in one durable write transaction; returns how many were stored.

        Rows are cast to the registered dtype; a row that is not plausible after the cast
        (not finite, e.g. a float16 overflow, or a norm the model cannot make) is not stored.
        """
        check_keys(fingerprint, keys)
        info = self._models.get(fingerprint)
        if info is None:
            found = self._txn(lambda txn: self._model_in(txn, fingerprint))
            if found is None:
                raise ValueError(f"register_model({fingerprint.hex()}, ...) before put_many")
            info = self._models[fingerprint] = found
        matrix = np.asarray(vectors)
        if matrix.ndim != 2 or matrix.shape != (len(keys), info.dim):
            raise ValueError(f"expected vectors of shape ({len(keys)}, {info.dim}), "
                             f"got {matrix.shape}")  # fmt: skip
        with np.errstate(over="ignore"):  # a float16 overflow becomes inf: not stored
            matrix = np.ascontiguousarray(matrix, dtype=DTYPES[info.dtype])
        ok = info.plausible(matrix)
        items = sorted((k, seal(k, matrix[i].tobytes())) for i, k in enumerate(keys) if ok[i])
        models_db, vectors_db = self._shared.models, self._shared.vectors

        def write(txn: Any) -> int:
            if txn.get(fingerprint, db=models_db) is None:  # cleared by another process
                txn.put(fingerprint, seal(fingerprint, info.to_json()), db=models_db)
            with txn.cursor(db=vectors_db) as cursor:
                cursor.putmulti(items)
            return len(items)

        return self._txn(write, write=True)

    # -- document records ---------------------------------------------------------------

    def get_docs(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Document records (from :func:`~embedgen.cache.keys.doc_keys`), None where unknown
        or damaged (counted in :attr:`bad_reads`)."""
        meta = self._shared.meta
        raws = self._txn(lambda txn: [txn.get(k, db=meta) for k in keys])
        out = [doc_record(k, raw) for k, raw in zip(keys, raws)]
        self.bad_reads += sum(1 for raw, rec in zip(raws, out) if raw is not None and rec is None)
        return out

    def put_docs(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Store document records in one write transaction."""
        if not items:
            return
        meta = self._shared.meta
        ordered = sorted((k, seal(k, v)) for k, v in items)

        def write(txn: Any) -> None:
            with txn.cursor(db=meta) as cursor:
                cursor.putmulti(ordered)

        self._txn(write, write=True)

    # -- runs -----------------------------------------------------------------------------

    def record_run(self, hits: int, misses: int, fingerprint: bytes) -> None:
        """Remember the hit and miss counts of the run that just finished."""
        rec = {"hits": int(hits), "misses": int(misses), "fingerprint": fingerprint.hex()}
        info = self._models.get(fingerprint)
        rec["model"] = info.name if info else None
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec["finished"] = finished
        data = seal(LAST_RUN, json.dumps(rec, sort_keys=True).encode())
        used = USED + fingerprint

        def write(txn: Any) -> None:
            txn.put(LAST_RUN, data, db=self._shared.meta)
            txn.put(used, seal(used, finished.encode()), db=self._shared.meta)

        self._txn(write, write=True)

    def last_run(self) -> dict[str, Any] | None:
        """The record of the last run (hits, misses, hit_rate, model, finished), if any."""
        raw = self._txn(lambda txn: txn.get(LAST_RUN, db=self._shared.meta))
        if raw is None:
            return None
        try:
            rec: dict[str, Any] = json.loads(record(LAST_RUN, raw))
            total = int(rec["hits"]) + int(rec["misses"])
        except (ValueError, KeyError, TypeError):
            return None
        rec["hit_rate"] = rec["hits"] / total if total else 0.0
        return rec


@contextmanager
def _nothing() -> Iterator[None]:
    yield
