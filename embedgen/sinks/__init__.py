"""Sinks: the stores a run writes into besides a Parquet file, kept in sync with the input.

- :mod:`~embedgen.sinks.target`: :class:`Target`, what ``-o`` names (a Parquet file or
  ``DIR/``, ``lancedb:PATH``, ``postgresql://...``) and the table in it.
- :mod:`~embedgen.sinks.base`: the :class:`Sink` contract and :class:`Known`, what a sink
  already holds per document (its fingerprint), which decides what a run writes.
- :mod:`~embedgen.sinks.lance`: LanceDB (embedded, ``embedgen[lance]``).
- :mod:`~embedgen.sinks.pg`: PostgreSQL with pgvector (``embedgen[postgres]``, psycopg 3).

A sink is given Arrow tables of whole documents and commits each atomically, so a reader
(and a re-run after a crash) sees a document's old chunks or its new ones, never both or
neither. The store libraries are imported only when a sink is opened. Reading a target
back (``embedgen search``) is ``embedgen.pipeline.search``.
"""

from __future__ import annotations

from embedgen.sinks.base import DOC_COLUMN, Known, Sink, check_metadata
from embedgen.sinks.target import Target, open_sink

__all__ = ["DOC_COLUMN", "Known", "Sink", "Target", "check_metadata", "open_sink"]
