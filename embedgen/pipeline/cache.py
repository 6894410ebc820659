"""Content-hash cache of embedding vectors in LMDB: what makes runs resumable and incremental.

One LMDB environment (a directory) holds three sub-databases:

- ``vectors``: key = fingerprint id (16 bytes) + ``blake2b(fingerprint id + text)`` (16 bytes),
  value = the raw vector bytes in the model's registered dtype. One model's entries are one
  contiguous key range, so stats and clearing per model are range scans.
- ``models``: fingerprint id -> JSON ``{description, name, dim, dtype, created}``.
- ``meta``: ``last_run`` -> JSON ``{hits, misses, fingerprint, model, finished}``.

A value that does not decode to a finite vector of the registered dim is a miss (counted in
:attr:`VectorCache.bad_reads`), never a result. The map grows by itself when it fills, and a
map grown by another process is adopted. Every lmdb error becomes a one-line
:class:`~embedgen.errors.CacheError` in :func:`_mapped`. ``lmdb`` is imported lazily.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedgen.errors import CacheError, UsageError

T = TypeVar("T")

ID_BYTES = 16
KEY_BYTES = 2 * ID_BYTES
DTYPES: dict[str, type[np.floating[Any]]] = {"float32": np.float32, "float16": np.float16}
_MiB = 1024**2
# Windows (LMDB 0.9) preallocates the data file to the map size: start small there.
INITIAL_MAP_SIZE = 32 * _MiB if sys.platform == "win32" else 256 * _MiB
_MAX_GROW_STEP = 1024 * _MiB if sys.platform == "win32" else 16 * 1024 * _MiB
_MAX_RETRIES = 64
_DELETE_CHUNK = 20_000
_LAST_RUN = b"last_run"
_LOW_SPACE = 64 * _MiB


def fingerprint_id(description: str) -> bytes:
    """The 16-byte id of a model fingerprint description (everything that changes a vector)."""
    return hashlib.blake2b(description.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def cache_key(fingerprint: bytes, text: str) -> bytes:
    """The 32-byte key of ``text`` under a model: fingerprint id + blake2b(fingerprint + text)."""
    digest = hashlib.blake2b(fingerprint, digest_size=16)
    digest.update(text.encode("utf-8", "surrogatepass"))
    return fingerprint + digest.digest()


def cache_keys(fingerprint: bytes, texts: Sequence[str]) -> list[bytes]:
    """:func:`cache_key` for each text."""
    return [cache_key(fingerprint, text) for text in texts]


def default_cache_dir() -> Path:
    """``EMBEDGEN_CACHE_DIR``, else ``vectors`` in the user cache directory of embedgen."""
    env = os.environ.get("EMBEDGEN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("embedgen", appauthor=False)) / "vectors"


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: an explicit ``--cache-dir`` / config value, else the default."""
    return Path(explicit).expanduser() if explicit else default_cache_dir()


@dataclass(frozen=True)
class ModelInfo:
    """A model registered in the cache."""

    fingerprint_id: bytes
    description: str
    name: str
    dim: int
    dtype: str
    created: str = ""

    @property
    def nbytes(self) -> int:
        return self.dim * np.dtype(DTYPES[self.dtype]).itemsize

    def to_json(self) -> bytes:
        record = {"description": self.description, "name": self.name, "dim": self.dim}
        record.update(dtype=self.dtype, created=self.created)
        return json.dumps(record, sort_keys=True).encode()

    @classmethod
    def from_json(cls, fingerprint: bytes, raw: bytes) -> ModelInfo | None:
        """Parse a ``models`` record; None when it is damaged."""
        try:
            rec = json.loads(bytes(raw))
            info = cls(fingerprint, str(rec["description"]), str(rec["name"]), int(rec["dim"]),
                       str(rec["dtype"]), str(rec.get("created", "")))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None
        return info if info.dtype in DTYPES and info.dim > 0 else None


@dataclass(frozen=True)
class ModelStats:
    """Entries stored under one fingerprint id; ``model`` is None when it is unregistered."""

    fingerprint_id: bytes
    model: ModelInfo | None
    entries: int
    bytes: int


@dataclass
class VerifyReport:
    """What :meth:`VectorCache.verify` found: bad entries by reason, and how many it removed."""

    checked: int = 0
    bad: int = 0
    removed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    bad_models: int = 0

    @property
    def remaining(self) -> int:
        return self.bad - self.removed

    def _add(self, reason: str) -> None:
        self.bad += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _mapped(exc: BaseException, path: Path) -> CacheError:
    """The one place where lmdb and OS errors become a one-line CacheError."""
    import lmdb

    code = getattr(exc, "errno", None) or getattr(exc, "code", None)
    # LMDB reports a short write (the disk filled up mid-write) as EIO.
    if (
        isinstance(exc, lmdb.DiskError)
        or code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        or (code == errno.EIO and _free_bytes(path) < _LOW_SPACE)
    ):
        return CacheError(
            f"disk full while writing the cache at {path}; free space or move the cache "
            "with --cache-dir; finished output is kept"
        )
    if code in (errno.EIO, errno.EFBIG):
        return CacheError(
            f"could not write the cache at {path} ({exc}: disk full, over quota or failing); "
            "free space or move the cache with --cache-dir; finished output is kept"
        )
    if isinstance(exc, (NotADirectoryError, FileExistsError)) or code == errno.ENOTDIR:
        return CacheError(
            f"cache directory {path} cannot be created (a file is in the way); "
            "set --cache-dir / EMBEDGEN_CACHE_DIR or use --no-cache"
        )
    if isinstance(exc, (lmdb.ReadonlyError, PermissionError)) or code in (
        errno.EACCES, errno.EPERM, errno.EROFS,
    ):  # fmt: skip
        return CacheError(
            f"cache directory {path} is not writable; set --cache-dir / EMBEDGEN_CACHE_DIR "
            "or use --no-cache"
        )
    damaged = (lmdb.CorruptedError, lmdb.InvalidError, lmdb.PanicError, lmdb.PageNotFoundError,
               lmdb.VersionMismatchError, lmdb.IncompatibleError, lmdb.BadDbiError)  # fmt: skip
    if isinstance(exc, damaged):
        return CacheError(
            f"cache at {path} is damaged ({exc}); delete that directory to start a new cache, "
            "or use --cache-dir / --no-cache"
        )
    if isinstance(exc, lmdb.ReadersFullError):
        return CacheError(f"too many processes are reading the cache at {path}; retry later")
    return CacheError(f"cache at {path} failed ({exc}); use --cache-dir or --no-cache")


def _free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (a large number when unknown)."""
    import shutil

    for where in (path, *path.parents):
        try:
            return shutil.disk_usage(where).free
        except OSError:
            continue
    return 1 << 62


class _SharedEnv:
    """One open LMDB environment per directory and process (LMDB allows no second one).

    Transactions hold the lock shared; changing the map size holds it exclusively, because
    ``set_mapsize`` needs no open transaction in this process. Writers queue on ``write_lock``.
    """

    def __init__(self, env: Any, path: Path, readonly: bool, dbs: tuple[Any, Any, Any]) -> None:
        self.env, self.path, self.readonly = env, path, readonly
        self.vectors, self.models, self.meta = dbs
        self.refs = 0
        self.write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive_wanted = 0
        self._exclusive = False
        self.grown = 0
        self.adopted = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._exclusive_wanted:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive_wanted += 1
            while self._exclusive or self._active:
                self._cond.wait()
            self._exclusive_wanted -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


_ENVS: dict[tuple[int, str], _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _open_env(path: Path, readonly: bool, map_size: int) -> _SharedEnv:
    import lmdb

    if readonly and not (path / "data.mdb").is_file():
        raise CacheError(f"no cache at {path}; nothing has been cached there yet")
    try:
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        data = path / "data.mdb"
        if data.is_file():  # reopen at the size already reached, not the initial one
            map_size = max(map_size, data.stat().st_size)
        env = lmdb.open(str(path), map_size=map_size, readonly=readonly, max_dbs=4,
                        max_readers=512, lock=True, create=not readonly)  # fmt: skip
    except (lmdb.Error, OSError) as exc:
        raise _mapped(exc, path) from exc
    try:
        if not readonly:
            env.reader_check()  # free reader slots of killed processes
        for _ in range(_MAX_RETRIES):
            try:
                dbs = tuple(
                    env.open_db(n, create=not readonly) for n in (b"vectors", b"models", b"meta")
                )
                break
            except lmdb.MapResizedError:
                env.set_mapsize(0)
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
        else:
            raise CacheError(f"cache at {path} could not be opened; use --cache-dir or --no-cache")
    except lmdb.NotFoundError as exc:
        env.close()
        raise CacheError(f"{path} is not an embedgen cache; use another --cache-dir") from exc
    except (lmdb.Error, OSError) as exc:
        env.close()
        raise _mapped(exc, path) from exc
    return _SharedEnv(env, path, readonly, dbs)  # type: ignore[arg-type]


class VectorCache:
    """Vectors by content hash, per model. Use :meth:`open`; close it (or use ``with``)."""

    def __init__(self, shared: _SharedEnv, readonly: bool) -> None:
        self._shared = shared
        self.readonly = readonly
        self._models: dict[bytes, ModelInfo] = {}
        self._closed = False
        self.bad_reads = 0
        """Values seen by :meth:`get_many` that were corrupt, of the wrong size or non-finite."""

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, readonly: bool = False,
        initial_map_size: int = INITIAL_MAP_SIZE,
    ) -> VectorCache:  # fmt: skip
        """Open the cache at ``path`` (default: :func:`default_cache_dir`), creating it."""
        where = resolve_cache_dir(path)
        key = (os.getpid(), os.path.realpath(where))
        with _ENVS_LOCK:
            shared = _ENVS.get(key)
            if shared is not None and shared.readonly and not readonly:
                raise CacheError(f"cache at {where} is already open read-only in this process")
            if shared is None:
                shared = _open_env(where, readonly, initial_map_size)
                _ENVS[key] = shared
            shared.refs += 1
        return cls(shared, readonly)

    def close(self) -> None:
        """Release this handle; the environment closes with its last handle in the process."""
        if self._closed:
            return
        self._closed = True
        with _ENVS_LOCK:
            self._shared.refs -= 1
            if self._shared.refs == 0:
                for key, value in list(_ENVS.items()):
                    if value is self._shared:
                        del _ENVS[key]
                with self._shared.exclusive():
                    self._shared.env.close()

    def __enter__(self) -> VectorCache:
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
        for _ in range(_MAX_RETRIES):
            fix = "grow"
            with shared.write_lock if write else _nothing():
                with shared.shared():
                    size = shared.env.info()["map_size"]
                    try:
                        with shared.env.begin(write=write, buffers=buffers) as txn:
                            return fn(txn)
                    except lmdb.MapResizedError:
                        fix = "adopt"
                    except lmdb.MapFullError:
                        fix = "grow"
                    except (lmdb.Error, OSError) as exc:
                        raise _mapped(exc, self.path) from exc
                try:
                    with shared.exclusive():
                        if fix == "adopt":
                            shared.env.set_mapsize(0)
                            shared.adopted += 1
                        elif shared.env.info()["map_size"] == size:
                            shared.env.set_mapsize(size + min(size, _MAX_GROW_STEP))
                            shared.grown += 1
                except (lmdb.Error, OSError) as exc:
                    raise _mapped(exc, self.path) from exc
        raise CacheError(f"cache at {self.path} kept running out of map space; use --no-cache")

    def _model_in(self, txn: Any, fingerprint: bytes) -> ModelInfo | None:
        raw = txn.get(fingerprint, db=self._shared.models)
        return None if raw is None else ModelInfo.from_json(fingerprint, raw)

    # -- models ---------------------------------------------------------------------------

    def register_model(
        self, fingerprint: bytes, description: str, name: str, dim: int, dtype: str = "float32"
    ) -> ModelInfo:
        """Record a model's fingerprint, so lookups know its dim and dtype and stats its name."""
        _check_id(fingerprint)
        if dtype not in DTYPES or dim <= 0:
            raise ValueError(f"cache stores float32 or float16 vectors of dim > 0, got {dtype}")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = ModelInfo(fingerprint, description, name, int(dim), dtype, created)

        def write(txn: Any) -> ModelInfo:
            old = self._model_in(txn, fingerprint)
            if old is not None and (old.dim, old.dtype) != (info.dim, info.dtype):
                raise ValueError(
                    f"fingerprint {fingerprint.hex()} is registered with dim {old.dim} "
                    f"{old.dtype}; the fingerprint must cover dim and dtype"
                )
            if old is not None and (old.description, old.name) == (description, name):
                return old
            keep = info if old is None else replace(info, created=old.created)
            txn.put(fingerprint, keep.to_json(), db=self._shared.models)
            return keep

        self._models[fingerprint] = self._txn(write, write=True)
        return self._models[fingerprint]

    def models(self) -> list[ModelInfo]:
        """Registered models (damaged records are left out; :meth:`verify` reports them)."""

        def read(txn: Any) -> list[ModelInfo]:
            found = (ModelInfo.from_json(k, v) for k, v in txn.cursor(db=self._shared.models))
            return [m for m in found if m is not None]

        return self._txn(read)

    # -- vectors --------------------------------------------------------------------------

    def get_many(self, fingerprint: bytes, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        """Cached vectors for ``keys`` (None for a miss), all read in one transaction.

        A value of the wrong size or with non-finite numbers is a miss, counted in
        :attr:`bad_reads`. Hits are float arrays of the registered dtype.
        """
        _check_keys(fingerprint, keys)
        vectors_db = self._shared.vectors

        def read(txn: Any) -> tuple[ModelInfo | None, list[bytes | None]]:
            info = self._model_in(txn, fingerprint)
            if info is None:
                return None, []
            return info, [txn.get(k, db=vectors_db) for k in keys]

        info, values = self._txn(read)
        out: list[np.ndarray | None] = [None] * len(keys)
        if info is None:
            return out
        size = info.nbytes
        found = [i for i, v in enumerate(values) if v is not None and len(v) == size]
        self.bad_reads += sum(1 for v in values if v is not None and len(v) != size)
        if not found:
            return out
        matrix = np.frombuffer(b"".join(values[i] for i in found), DTYPES[info.dtype])  # type: ignore[misc]
        matrix = matrix.reshape(len(found), info.dim).copy()
        finite = np.isfinite(matrix).all(axis=1)
        self.bad_reads += int((~finite).sum())
        for row, i in enumerate(found):
            if finite[row]:
                out[i] = matrix[row]
        return out

    def put_many(self, fingerprint: bytes, keys: Sequence[bytes], vectors: np.ndarray) -> int:
        """Store vectors in one durable write transaction; returns how many were stored.

        Rows are cast to the registered dtype; a row that is not finite after the cast
        (e.g. a float16 overflow) is not stored.
        """
        _check_keys(fingerprint, keys)
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
        finite = np.isfinite(matrix).all(axis=1)
        items = sorted((k, matrix[i].tobytes()) for i, k in enumerate(keys) if finite[i])
        models_db, vectors_db = self._shared.models, self._shared.vectors

        def write(txn: Any) -> int:
            if txn.get(fingerprint, db=models_db) is None:  # cleared by another process
                txn.put(fingerprint, info.to_json(), db=models_db)
            with txn.cursor(db=vectors_db) as cursor:
                cursor.putmulti(items)
            return len(items)

        return self._txn(write, write=True)

    # -- runs -----------------------------------------------------------------------------

    def record_run(self, hits: int, misses: int, fingerprint: bytes) -> None:
        """Remember the hit and miss counts of the run that just finished."""
        rec = {"hits": int(hits), "misses": int(misses), "fingerprint": fingerprint.hex()}
        info = self._models.get(fingerprint)
        rec["model"] = info.name if info else None
        rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = json.dumps(rec, sort_keys=True).encode()
        self._txn(lambda txn: txn.put(_LAST_RUN, data, db=self._shared.meta), write=True)

    def last_run(self) -> dict[str, Any] | None:
        """The record of the last run (hits, misses, hit_rate, model, finished), if any."""
        raw = self._txn(lambda txn: txn.get(_LAST_RUN, db=self._shared.meta))
        if raw is None:
            return None
        try:
            rec: dict[str, Any] = json.loads(raw)
            total = int(rec["hits"]) + int(rec["misses"])
        except (ValueError, KeyError, TypeError):
            return None
        rec["hit_rate"] = rec["hits"] / total if total else 0.0
        return rec

    # -- maintenance ----------------------------------------------------------------------

    def stats(self) -> list[ModelStats]:
        """Entries and bytes per fingerprint id, registered models first by name."""

        def read(txn: Any) -> list[ModelStats]:
            models = {m.fingerprint_id: m for m in _iter_models(txn, self._shared.models)}
            counts: dict[bytes, list[int]] = {fp: [0, 0] for fp in models}
            last, acc = b"", [0, 0]
            for key, value in txn.cursor(db=self._shared.vectors):
                if key[:ID_BYTES] != last:
                    last = bytes(key[:ID_BYTES])
                    acc = counts.setdefault(last, [0, 0])
                acc[0] += 1
                acc[1] += len(value)
            return [ModelStats(fp, models.get(fp), n, b) for fp, (n, b) in counts.items()]

        rows = self._txn(read, buffers=True)
        return sorted(rows, key=lambda s: (s.model is None, s.model.name if s.model else "",
                                           s.fingerprint_id))  # fmt: skip

    def verify(self, *, fix: bool = False) -> VerifyReport:
        """Check every value decodes to a finite vector of its model's dim; ``fix`` removes bad."""
        report = VerifyReport()

        def scan(txn: Any) -> list[bytes]:
            models: dict[bytes, ModelInfo | None] = {}
            for fp, raw in txn.cursor(db=self._shared.models):
                models[bytes(fp)] = ModelInfo.from_json(bytes(fp), raw)
            report.bad_models = sum(1 for m in models.values() if m is None)
            bad: list[bytes] = []
            for key, value in txn.cursor(db=self._shared.vectors):
                report.checked += 1
                reason = _problem(key, value, models)
                if reason:
                    report._add(reason)
                    bad.append(bytes(key))
            return bad

        bad = self._txn(scan, buffers=True)
        if not fix:
            return report
        for start in range(0, len(bad), _DELETE_CHUNK):
            chunk = bad[start : start + _DELETE_CHUNK]
            report.removed += self._txn(partial(self._delete_bad, keys=chunk), write=True)
        if report.bad_models:
            self._txn(self._delete_bad_models, write=True)
        return report

    def _delete_bad(self, txn: Any, *, keys: list[bytes]) -> int:
        """Delete keys still bad inside this write transaction (another process may fix them)."""
        models: dict[bytes, ModelInfo | None] = {}
        removed = 0
        for key in keys:
            fp = key[:ID_BYTES]
            if len(key) == KEY_BYTES and fp not in models:
                models[fp] = self._model_in(txn, fp)
            value = txn.get(key, db=self._shared.vectors)
            if value is None or _problem(key, value, models) is None:
                removed += 1  # gone or rewritten meanwhile: no longer bad
                continue
            removed += bool(txn.delete(key, db=self._shared.vectors))
        return removed

    def _delete_bad_models(self, txn: Any) -> None:
        for fp, raw in list(txn.cursor(db=self._shared.models)):
            if ModelInfo.from_json(fp, raw) is None:
                txn.delete(fp, db=self._shared.models)

    def clear(self, model: str | None = None) -> int:
        """Remove every entry, or one model's (by registered name or fingerprint hex prefix).

        Returns the number of vectors removed. An unknown model is a UsageError.
        """
        if model is None:

            def drop(txn: Any) -> int:
                count = int(txn.stat(self._shared.vectors)["entries"])
                for db in (self._shared.vectors, self._shared.models, self._shared.meta):
                    txn.drop(db, delete=False)
                return count

            removed = self._txn(drop, write=True)
            self._models.clear()
            return removed
        removed = 0
        for info in self.match(model):
            step = partial(self._delete_range, fingerprint=info.fingerprint_id)
            while True:  # bounded: each step removes _DELETE_CHUNK entries or finishes
                n = self._txn(step, write=True)
                removed += n
                if n < _DELETE_CHUNK:
                    break
            self._models.pop(info.fingerprint_id, None)
        return removed

    def _delete_range(self, txn: Any, fingerprint: bytes) -> int:
        """Delete up to _DELETE_CHUNK entries of a model; with the last ones, its record."""
        removed = 0
        with txn.cursor(db=self._shared.vectors) as cursor:
            found = cursor.set_range(fingerprint)
            while found and removed < _DELETE_CHUNK and cursor.key()[:ID_BYTES] == fingerprint:
                found = cursor.delete()
                removed += 1
        if removed < _DELETE_CHUNK:
            txn.delete(fingerprint, db=self._shared.models)
        return removed

    def match(self, model: str) -> list[ModelInfo]:
        """Registered models named ``model``, or the one whose fingerprint starts with it."""
        models = self.models()
        named = [m for m in models if m.name == model]
        if named:
            return named
        prefix = model.lower()
        if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
            hexed = [m for m in models if m.fingerprint_id.hex().startswith(prefix)]
            if len(hexed) > 1:
                raise UsageError(f"fingerprint prefix {model} matches {len(hexed)} models in "
                                 "the cache; give more hex digits")  # fmt: skip
            if hexed:
                return hexed
        raise UsageError(f"no model {model!r} in the cache at {self.path}; "
                         "see `embedgen cache stats` for names and fingerprints")  # fmt: skip


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _iter_models(txn: Any, db: Any) -> Iterator[ModelInfo]:
    for fp, raw in txn.cursor(db=db):
        info = ModelInfo.from_json(bytes(fp), raw)
        if info is not None:
            yield info


def _problem(key: Any, value: Any, models: dict[bytes, ModelInfo | None]) -> str | None:
    """Why a stored entry is bad, or None when it decodes to a finite vector of its dim."""
    if len(key) != KEY_BYTES:
        return "bad key"
    info = models.get(bytes(key[:ID_BYTES]))
    if info is None:
        return "unknown model"
    if len(value) != info.nbytes:
        return "wrong size"
    if not np.isfinite(np.frombuffer(value, DTYPES[info.dtype])).all():
        return "not finite"
    return None


def _check_id(fingerprint: bytes) -> None:
    if not isinstance(fingerprint, bytes) or len(fingerprint) != ID_BYTES:
        raise ValueError("a fingerprint id is 16 bytes: use fingerprint_id(description)")


def _check_keys(fingerprint: bytes, keys: Sequence[bytes]) -> None:
    _check_id(fingerprint)
    for key in keys:
        if len(key) != KEY_BYTES or key[:ID_BYTES] != fingerprint:
            raise ValueError("cache keys must come from cache_key() with the same fingerprint id")
