"""Cache maintenance for ``embedgen cache``: stats, verify, clear, prune and finding a model.

:class:`CacheAdmin` is a :class:`~embedgen.cache.store.VectorCache` with the operations
that scan or delete whole key ranges; a run never needs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np

from embedgen.cache.keys import DOC_PREFIX, ID_BYTES, KEY_BYTES
from embedgen.cache.records import DTYPES, ModelInfo, ModelStats, VerifyReport
from embedgen.cache.seal import CHECK_BYTES, checksum, doc_record, record, unseal
from embedgen.cache.store import LAST_RUN, USED, VectorCache
from embedgen.errors import UsageError

_DELETE_CHUNK = 20_000


class CacheAdmin(VectorCache):
    """A cache handle that can also report on, check and clear the whole cache."""

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
            used = _used(txn, self._shared.meta)
            return [
                ModelStats(fp, models.get(fp), n, b, used.get(fp, ""))
                for fp, (n, b) in counts.items()
            ]

        rows = self._txn(read, buffers=True)
        return sorted(rows, key=lambda s: (s.model is None, s.model.name if s.model else "",
                                           s.fingerprint_id))  # fmt: skip

    def verify(self, *, fix: bool = False) -> VerifyReport:
        """Check every value's checksum and that it decodes to a vector its model can make,
        and every model, document and last-run record; ``fix`` removes what is bad."""
        report = VerifyReport()

        def scan(txn: Any) -> list[bytes]:
            models: dict[bytes, ModelInfo | None] = {}
            for fp, raw in txn.cursor(db=self._shared.models):
                models[bytes(fp)] = ModelInfo.from_json(bytes(fp), record(fp, raw))
            report.bad_models = sum(1 for m in models.values() if m is None)
            report.bad_records = sum(1 for k, v in txn.cursor(db=self._shared.meta)
                                     if _bad_record(k, v))  # fmt: skip
            bad: list[bytes] = []
            for key, value in txn.cursor(db=self._shared.vectors):
                report.checked += 1
                reason = _problem(key, value, models)
                if reason:
                    report.add(reason)
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
        if report.bad_records:
            self._txn(self._delete_bad_records, write=True)
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
            if ModelInfo.from_json(fp, record(fp, raw)) is None:
                txn.delete(fp, db=self._shared.models)

    def _delete_bad_records(self, txn: Any) -> None:
        for key, raw in list(txn.cursor(db=self._shared.meta)):
            if _bad_record(key, raw):
                txn.delete(key, db=self._shared.meta)

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
        return sum(self._remove(info) for info in self.match(model))

    def unused_since(self, cutoff: str, model: str | None = None) -> list[ModelInfo]:
        """Models (all, or those ``model`` matches) no run has used since ``cutoff`` (ISO UTC).

        A model no run recorded (a cache from before embedgen recorded use) counts from
        when it was registered.
        """
        used = self._txn(lambda txn: _used(txn, self._shared.meta))
        models = self.match(model) if model is not None else self.models()
        return [m for m in models if (used.get(m.fingerprint_id) or m.created) < cutoff]

    def prune(self, models: list[ModelInfo]) -> int:
        """Remove ``models`` (from :meth:`unused_since` or :meth:`match`); vectors removed."""
        return sum(self._remove(info) for info in models)

    def _remove(self, info: ModelInfo) -> int:
        removed = 0
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
            txn.delete(USED + fingerprint, db=self._shared.meta)
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


def _used(txn: Any, meta: Any) -> dict[bytes, str]:
    """Fingerprint id -> when a run last used it, from the ``meta`` records."""
    out: dict[bytes, str] = {}
    with txn.cursor(db=meta) as cursor:
        found = cursor.set_range(USED)
        while found and bytes(cursor.key()).startswith(USED):
            key = bytes(cursor.key())
            when = unseal(key, cursor.value())
            if when is not None:  # a damaged record: as if unused since registered
                out[key[len(USED) :]] = when.decode("ascii", "replace")
            found = cursor.next()
    return out


def _iter_models(txn: Any, db: Any) -> Iterator[ModelInfo]:
    for fp, raw in txn.cursor(db=db):
        info = ModelInfo.from_json(bytes(fp), record(fp, raw))
        if info is not None:
            yield info


def _problem(key: Any, value: Any, models: dict[bytes, ModelInfo | None]) -> str | None:
    """Why a stored entry is bad, or None when it passes its checksum (values written before
    checksums have none) and decodes to a vector its model can make."""
    if len(key) != KEY_BYTES:
        return "bad key"
    info = models.get(bytes(key[:ID_BYTES]))
    if info is None:
        return "unknown model"
    size = info.nbytes
    if len(value) == size + CHECK_BYTES:
        if checksum(key, value[:size]) != bytes(value[size:]):
            return "checksum mismatch"
    elif len(value) != size:
        return "wrong size"
    vector = np.frombuffer(value[:size], DTYPES[info.dtype])
    if not np.isfinite(vector).all():
        return "not finite"
    if not info.plausible(vector.reshape(1, -1))[0]:
        return "implausible norm"
    return None


def _bad_record(key: Any, raw: Any) -> bool:
    """A damaged document, last-use or last-run record in the meta database (which holds
    nothing else, so a record under any other key has a damaged key)."""
    if bytes(key[: len(DOC_PREFIX)]) == DOC_PREFIX:
        return doc_record(key, raw) is None
    if bytes(key[: len(USED)]) == USED:
        return unseal(key, raw) is None
    if bytes(key) != LAST_RUN:
        return True
    try:
        json.loads(record(key, raw))
    except ValueError:
        return True
    return False
