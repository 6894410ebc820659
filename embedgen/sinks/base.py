"""The sink contract, and what a sink already holds per document.

Every sink row carries ``doc_fingerprint``: the document key of the cache's document
record (model fingerprint, chunk window and overlap, and the document's text; see
``embedgen.cache.doc_keys``). A run compares each input document with it: an equal
fingerprint means the document's rows are already exactly what this run would write.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from embedgen.errors import SinkMismatchError

DOC_COLUMN = "doc_fingerprint"
"""The column of each row's document fingerprint (16 bytes)."""

META_KEY = "embedgen"
"""Where a table keeps its JSON metadata (the Parquet output's key-value metadata)."""


class Known:
    """A sink's documents: id -> fingerprint, None where its rows are not one whole version.

    A document's rows are one version when they share one fingerprint and number their
    chunks 0..n-1. Rows added by hand, or of a version half replaced by another tool, make
    the document "untrusted": the next run rewrites it.
    """

    def __init__(self, ids: Iterable[Any], chunks: Iterable[int], fps: Iterable[Any]) -> None:
        seen: dict[Any, tuple[Any, int, int]] = {}  # id -> (fingerprint, rows, max chunk)
        bad: set[Any] = set()
        for i, c, fp in zip(ids, chunks, fps):
            prev = seen.get(i)
            if prev is None:
                seen[i] = (fp, 1, c)
            else:
                if prev[0] != fp:
                    bad.add(i)
                seen[i] = (prev[0], prev[1] + 1, max(prev[2], c))
        self.docs: dict[Any, bytes | None] = {}
        for i, (fp, rows, top) in seen.items():
            whole = i not in bad and fp is not None and len(fp) == 16 and rows == top + 1
            self.docs[i] = bytes(fp) if whole else None
        self.untrusted = sum(1 for v in self.docs.values() if v is None)

    def __len__(self) -> int:
        return len(self.docs)

    def __contains__(self, doc_id: Any) -> bool:
        return doc_id in self.docs

    def unchanged(self, doc_id: Any, fingerprint: bytes) -> bool:
        return self.docs.get(doc_id, b"") == fingerprint


class Sink(ABC):
    """A store of chunk rows, written one batch of whole documents at a time.

    A subclass implements the store's side; the order of calls is ``table_metadata``
    (None: no table yet), ``known``, ``create``, ``write``..., ``delete``, ``flush``,
    ``build_index``, ``close``.
    """

    name: str

    @abstractmethod
    def table_metadata(self) -> tuple[dict[str, str], list[str]] | None:
        """The table's embedgen metadata and column names, or None when it does not exist."""

    @abstractmethod
    def known(self) -> Known: ...

    @abstractmethod
    def create(self, schema: Any, *, overwrite: bool) -> None:
        """Create the table for ``schema`` (an Arrow schema), or replace it if ``overwrite``."""

    @abstractmethod
    def write(self, table: Any, replace: list[Any]) -> None:
        """Put ``table``'s rows in, taking out every earlier row of the ids in ``replace``.

        Both happen in one commit (a sink may gather several calls into one), so no reader
        sees a document's old and new rows together, or neither.
        """

    @abstractmethod
    def delete(self, ids: list[Any]) -> None:
        """Remove every row of these documents, in one commit."""

    @abstractmethod
    def flush(self) -> None:
        """Commit what ``write`` gathered (a sink that commits every write does nothing)."""

    @abstractmethod
    def build_index(self) -> str:
        """Build the store's ANN index over the vectors; say which."""

    @abstractmethod
    def close(self) -> None: ...


def check_metadata(
    sink: Sink, found: tuple[dict[str, str], list[str]], meta: dict[str, str], columns: list[str]
) -> None:
    """Refuse a table written by another model, dimension, dtype or set of columns."""
    old, old_columns = found
    hint = "; pass --overwrite to replace it, or write to another --table"
    if not old:
        raise SinkMismatchError(f"{sink.name} was not written by embedgen{hint}")
    if old.get("fingerprint") != meta["fingerprint"]:
        raise SinkMismatchError(
            f"{sink.name} holds vectors of another model or settings "
            f"({old.get('model', '?')}, {old.get('dim', '?')}-d, {old.get('dtype', '?')}; "
            f"this run: {meta['model']}, {meta['dim']}-d, {meta['dtype']}){hint}"
        )
    if old.get("dim") != meta["dim"]:
        raise SinkMismatchError(
            f"{sink.name} has {old.get('dim')}-d vectors; this run makes {meta['dim']}-d{hint}"
        )
    if "vector" in meta and old.get("vector", meta["vector"]) != meta["vector"]:
        raise SinkMismatchError(
            f"{sink.name} stores vectors as {old['vector']}; this run writes {meta['vector']}{hint}"
        )
    if old_columns != columns:
        raise SinkMismatchError(
            f"{sink.name} has columns {', '.join(old_columns)}; this run writes "
            f"{', '.join(columns)} (--keep / --no-text differ){hint}"
        )


def dump_metadata(meta: dict[str, str]) -> str:
    return json.dumps(meta, sort_keys=True)


def load_metadata(text: str | bytes | None) -> dict[str, str]:
    """A table's metadata; {} when it has none (not written by embedgen)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal for a filter (LanceDB's DataFusion dialect)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"ids of type {type(value).__name__} cannot be synced")
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"
