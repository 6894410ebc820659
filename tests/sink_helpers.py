"""Reading a sink back, to compare it row by row with a Parquet run (tests only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ["id", "chunk", "char_start", "char_end", "tokens", "text"]

# ``python -c PROBE KIND:METHOD:N:WHEN embedgen-args...``: the real CLI, SIGKILLed at the
# Nth call of the sink's METHOD (before or after it), or with METHOD ``upsert`` inside a
# PostgreSQL window's transaction, after the COPY and before the upsert.
PROBE = """
import os, signal, sys
kind, method, nth, when = sys.argv[1].split(":")
nth = int(nth)
calls = [0]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if method == "upsert":  # inside the transaction: rows copied, not yet moved in
    import psycopg
    execute = psycopg.Cursor.execute
    def probed(self, query, *a, **k):
        if "ON CONFLICT" in repr(query):
            calls[0] += 1
            if calls[0] == nth:
                die()
        return execute(self, query, *a, **k)
    psycopg.Cursor.execute = probed
else:
    from embedgen.sinks import lance, pg
    cls = lance.LanceSink if kind == "lancedb" else pg.PgSink
    original = getattr(cls, method)
    def probed(self, *a, **k):
        calls[0] += 1
        if calls[0] == nth and when == "before":
            die()
        result = original(self, *a, **k)
        if calls[0] == nth and when == "after":
            die()
        return result
    setattr(cls, method, probed)
from embedgen.cli import main
main(sys.argv[2:])
"""


def parquet_rows(path: Path) -> list[tuple[Any, ...]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    return _rows(t.select(COLUMNS).to_pylist(), t.column("embedding").to_pylist())


def lance_rows(path: Path, table: str = "chunks") -> list[tuple[Any, ...]]:
    import lancedb

    t = lancedb.connect(str(path)).open_table(table).to_arrow()
    return _rows(t.select(COLUMNS).to_pylist(), t.column("embedding").to_pylist())


def pg_rows(dsn: str, table: str = "chunks") -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)}, embedding::text FROM {table}").fetchall()
    plain = [dict(zip(COLUMNS, r[:-1])) for r in rows]
    return _rows(plain, [[float(x) for x in r[-1].strip("[]").split(",")] for r in rows])


def _rows(plain: list[dict[str, Any]], vectors: list[list[float]]) -> list[tuple[Any, ...]]:
    out = [
        (*(d[c] for c in COLUMNS), np.asarray(v, dtype=np.float32)) for d, v in zip(plain, vectors)
    ]
    return sorted(out, key=lambda r: (r[0], r[1]))


def assert_same_rows(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    """Same (id, chunk) keys, offsets, tokens and texts; vectors equal to float32 rounding."""
    assert [r[:-1] for r in got] == [r[:-1] for r in want]
    for g, w in zip(got, want):
        assert np.allclose(g[-1], w[-1], atol=1e-6), (g[0], g[1])
