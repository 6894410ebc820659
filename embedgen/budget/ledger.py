"""The spend ledger: money per provider per calendar month (UTC), per run, and in flight.

One small JSON file beside the vector cache (``<cache dir>/budget-ledger.json``),
changed only under an exclusive OS lock on ``budget-ledger.lock`` and replaced
atomically (write a temporary file, fsync, rename). Why a file and not an LMDB
sub-database of the cache: the ledger must outlive the cache (``cache clear``, a
deleted or corrupt cache, ``--no-cache`` runs must not reset what was spent), it must be
readable by a person, and it is tiny and written once per request, which a locked
rewrite does in well under a millisecond. Concurrent runs add up: every update is a
read-modify-write under the lock.

Reservations of requests in flight are in the file too, so two runs sharing a monthly
cap see each other's in-flight money. A reservation left by a process that died (same
host, PID gone) or older than a day is counted as spent: the request may have been
billed, and a cap must hold.

Amounts are integer pico-dollars (see :mod:`embedgen.budget.prices`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from embedgen.errors import CacheError
from embedgen.util.atomic import atomic_write_text
from embedgen.util.locks import FileMutex, pid_alive

LEDGER_NAME = "budget-ledger.json"
_STALE_SECONDS = 24 * 3600
_BATCH_STALE_SECONDS = 30 * 24 * 3600
"""A batch job's reservation (``"batch": true``, see budget/pending.py) outlives its run."""
_KEEP_RUNS = 50
_LOCK_WAIT_SECONDS = 600.0


def month_of(when: datetime | None = None) -> str:
    """The UTC calendar month ``YYYY-MM`` of ``when`` (default: now)."""
    return (when or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m")


def ledger_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``budget-ledger.json`` in the cache directory (``--cache-dir``, config or default)."""
    from embedgen.cache import resolve_cache_dir

    return resolve_cache_dir(cache_dir) / LEDGER_NAME


@dataclass
class LedgerState:
    """The file's content, as read under the lock."""

    months: dict[str, dict[str, int]] = field(default_factory=dict)
    """``YYYY-MM`` -> provider -> pico-dollars spent."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """The most recent runs: id, started, finished, status, spend per provider."""
    reserved: dict[str, dict[str, Any]] = field(default_factory=dict)
    """run id -> {pid, host, updated, amounts: provider -> pico-dollars in flight}."""

    def month_spend(self, month: str) -> dict[str, int]:
        return dict(self.months.get(month, {}))

    def in_flight(self) -> dict[str, int]:
        """Pico-dollars reserved by requests in flight, per provider, over all runs."""
        out: dict[str, int] = {}
        for entry in self.reserved.values():
            for name, amount in entry.get("amounts", {}).items():
                out[name] = out.get(name, 0) + int(amount)
        return out

    def add_spend(self, month: str, name: str, amount: int) -> None:
        per = self.months.setdefault(month, {})
        per[name] = per.get(name, 0) + amount

    def to_json(self) -> str:
        data = {"version": 1, "months": self.months, "runs": self.runs, "reserved": self.reserved}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def parse(cls, raw: str, path: Path) -> LedgerState:
        try:
            data = json.loads(raw) if raw.strip() else {}
            months = {
                str(m): {str(k): int(v) for k, v in per.items()}
                for m, per in data.get("months", {}).items()
            }
            runs = [dict(r) for r in data.get("runs", [])]
            reserved = {str(k): dict(v) for k, v in data.get("reserved", {}).items()}
        except (ValueError, TypeError, AttributeError):
            raise CacheError(
                f"{path}: the budget ledger is damaged; fix or delete it "
                "(deleting it forgets this month's spend)"
            ) from None
        return cls(months, runs, reserved)


class Ledger:
    """The ledger file; every read and update holds its lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name.removesuffix(".json") + ".lock")
        self._thread_lock = threading.Lock()

    def read(self) -> LedgerState:
        """A consistent snapshot (stale reservations shown as spent, file unchanged)."""
        with self.update(write=False) as state:
            return state

    @contextlib.contextmanager
    def update(self, *, write: bool = True) -> Iterator[LedgerState]:
        """The state under the lock; changes made in the block are saved atomically."""
        with self._thread_lock, self._file_lock():
            state = self._load()
            changed = self._settle_stale(state)
            yield state
            if write or changed:
                self._save(state)

    # Internals -------------------------------------------------------------------------
    def _load(self) -> LedgerState:
        try:
            raw = self.path.read_text("utf-8")
        except FileNotFoundError:
            return LedgerState()
        except OSError as exc:
            raise CacheError(f"cannot read the budget ledger {self.path}: {exc.strerror}") from None
        return LedgerState.parse(raw, self.path)

    def _save(self, state: LedgerState) -> None:
        state.runs = state.runs[-_KEEP_RUNS:]
        try:
            atomic_write_text(self.path, state.to_json())
        except OSError as exc:
            raise CacheError(
                f"cannot write the budget ledger {self.path}: {exc.strerror}; "
                "check the cache directory's permissions and free space"
            ) from None

    @staticmethod
    def _settle_stale(state: LedgerState) -> bool:
        """Count reservations of dead runs as spent; True when any was found."""
        host, now = socket.gethostname(), time.time()
        stale = [
            rid
            for rid, e in state.reserved.items()
            if now - float(e.get("updated", 0))
            > (_BATCH_STALE_SECONDS if e.get("batch") else _STALE_SECONDS)
            or (
                not e.get("batch")
                and e.get("host") == host
                and not pid_alive(int(e.get("pid", -1)))
            )
        ]
        for rid in stale:
            entry = state.reserved.pop(rid)
            month = month_of(datetime.fromtimestamp(float(entry.get("updated", now)), timezone.utc))
            for name, amount in entry.get("amounts", {}).items():
                if int(amount) > 0:
                    state.add_spend(month, name, int(amount))
        return bool(stale)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        mutex = FileMutex(self.lock_path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mutex.acquire(timeout=_LOCK_WAIT_SECONDS)
        except TimeoutError:
            raise CacheError(
                "the budget ledger stayed locked by another run for 10 minutes"
            ) from None
        except OSError as exc:
            raise CacheError(
                f"cannot open the budget ledger lock {self.lock_path}: {exc.strerror}"
            ) from None
        try:
            yield
        finally:
            mutex.release()
