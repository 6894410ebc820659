"""PostgreSQL with pgvector (``embedgen[postgres]``, psycopg 3).

Each :meth:`PgSink.write` is one transaction: the rows go by binary ``COPY`` into a
temporary staging table, the replaced documents' other rows are deleted, and one
``INSERT ... ON CONFLICT (id, chunk) DO UPDATE`` moves the staged rows in. A session
advisory lock keeps two runs off one table. The password (DSN, ``PGPASSWORD`` or
``.pgpass``) is handed to libpq and never printed: :func:`safe_dsn` masks it.
"""

from __future__ import annotations

import re
import struct
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from embedgen.errors import LockHeld, SinkError, UsageError
from embedgen.sinks.base import (
    DOC_COLUMN,
    META_KEY,
    Known,
    Sink,
    load_metadata,
)

_SQL_TYPES = {
    "int64": ("bigint", 20),
    "int32": ("integer", 23),
    "string": ("text", 25),
    "large_string": ("text", 25),
    "double": ("double precision", 701),
    "float": ("real", 700),
    "bool": ("boolean", 16),
    "fixed_size_binary[16]": ("bytea", 17),
    "binary": ("bytea", 17),
}
_STAGE = "embedgen_stage"


def safe_dsn(dsn: str) -> str:
    """The DSN with its password masked, fit to print."""
    masked = re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)
    if "://" not in masked:
        return masked
    parts = urlsplit(masked)
    if parts.password is None:
        return masked
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class PgSink(Sink):
    def __init__(self, dsn: str, table: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise UsageError(
                "-o postgresql:// needs psycopg: pip install 'embedgen[postgres]'"
            ) from None
        self.where = safe_dsn(dsn)
        self.name = f"PostgreSQL table {table!r} at {self.where}"
        self._secret = _password(dsn)
        self.schema, _, self.table_name = table.rpartition(".")
        try:
            self.conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
        except psycopg.ProgrammingError as exc:  # a malformed DSN
            raise UsageError(f"bad PostgreSQL DSN {self.where}: {self._clean(exc)}") from None
        except psycopg.Error as exc:
            raise SinkError(f"cannot connect to {self.where}: {self._clean(exc)}") from None
        self._ident = self._qualified()
        self._types: list[int] = []
        self._columns: list[str] = []
        self._lock()

    # -- errors ---------------------------------------------------------------------

    def _clean(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text.replace(self._secret, "***") if self._secret else text

    def _run(self, what: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, with a failure of the database mapped to one line."""
        import psycopg

        try:
            return fn(*args)
        except psycopg.OperationalError as exc:
            raise SinkError(
                f"lost the connection to {self.where} while {what}: {self._clean(exc)}; "
                "re-run the same command (embedded chunks are in the cache)"
            ) from None
        except psycopg.Error as exc:
            raise SinkError(f"{self.name}: {what} failed: {self._clean(exc)}") from None

    # -- setup ----------------------------------------------------------------------

    def _qualified(self) -> Any:
        from psycopg import sql

        if self.schema:
            return sql.Identifier(self.schema, self.table_name)
        return sql.Identifier(self.table_name)

    def _lock(self) -> None:
        key = f"embedgen:{self.schema or 'public'}.{self.table_name}"
        row = self._run(
            "locking", self.conn.execute, "SELECT pg_try_advisory_lock(hashtext(%s))", [key]
        ).fetchone()
        if not row[0]:
            self.conn.close()
            raise LockHeld(f"another run is writing {self.name}; wait for it to finish")

    def table_metadata(self) -> tuple[dict[str, str], list[str]] | None:
        name = f"{self.schema}.{self.table_name}" if self.schema else self.table_name
        q = "SELECT obj_description(to_regclass(%s), 'pg_class'), to_regclass(%s) IS NOT NULL"
        comment, exists = self._run(
            "reading the table", self.conn.execute, q, [name, name]
        ).fetchone()
        if not exists:
            return None
        q2 = (
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
        cols = [r[0] for r in self._run("reading the table", self.conn.execute, q2, [name])]
        return load_metadata(comment), cols

    def known(self) -> Known:
        from psycopg import sql

        if self.table_metadata() is None:
            return Known([], [], [])
        q = sql.SQL("SELECT id, chunk, {} FROM {}").format(sql.Identifier(DOC_COLUMN), self._ident)
        rows = self._run("reading the table", self.conn.execute, q).fetchall()
        return Known((r[0] for r in rows), (r[1] for r in rows), (r[2] for r in rows))

    def create(self, schema: Any, *, overwrite: bool) -> None:
        self._run("creating the table", self._create, schema, overwrite)

    def _create(self, schema: Any, overwrite: bool) -> None:
        from psycopg import sql

        conn = self.conn
        self._columns = list(schema.names)
        defs = []
        vector_oid = None
        for f in schema:
            if f.name == "embedding":
                vtype, vector_oid = self._vector_type(f.type)
                defs.append(sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(vtype)))
                self._types.append(vector_oid)
                continue
            sql_type, oid = _sql_type(f)
            defs.append(sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(sql_type)))
            self._types.append(oid)
        meta = (schema.metadata or {}).get(META_KEY.encode(), b"{}").decode()
        with conn.transaction():
            exists = self.table_metadata() is not None
            if exists and overwrite:
                conn.execute(sql.SQL("DROP TABLE {}").format(self._ident))
            if not exists or overwrite:
                conn.execute(
                    sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (id, chunk))").format(
                        self._ident, sql.SQL(", ").join(defs)
                    )
                )
                comment = sql.SQL("COMMENT ON TABLE {} IS {}")
                conn.execute(comment.format(self._ident, sql.Literal(meta)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(_STAGE)))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(_STAGE), self._ident
            )
        )
        _register_vector_dumper(conn, vector_oid)

    def _vector_type(self, arrow_type: Any) -> tuple[str, int]:
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        dim = arrow_type.list_size
        half = str(arrow_type.value_type) == "halffloat" and self._has("halfvec")
        name = "halfvec" if half else "vector"
        self._vec = (struct.pack(">HH", dim, 0), ">f2" if half else ">f4")
        return f"{name}({dim})", self._oid(name)

    def _has(self, type_name: str) -> bool:
        return self._oid(type_name) != 0

    def _oid(self, type_name: str) -> int:
        row = self.conn.execute("SELECT coalesce(to_regtype(%s)::oid, 0)", [type_name]).fetchone()
        return int(row[0]) if row else 0

    # -- writes ---------------------------------------------------------------------

    def write(self, table: Any, replace: list[Any]) -> None:
        self._run("writing rows", self._write, table, replace)

    def _write(self, table: Any, replace: list[Any]) -> None:
        from psycopg import sql

        cols = sql.SQL(", ").join(sql.Identifier(c) for c in self._columns)
        stage = sql.Identifier(_STAGE)
        columns = []
        for name in self._columns:
            col = table.column(name)
            if name == "embedding":
                columns.append(self._vectors(col))
            else:
                columns.append(col.to_pylist())
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, cols)
            with cur.copy(copy_sql) as copy:
                copy.set_types(self._types)
                for row in zip(*columns):
                    copy.write_row(row)
            if replace:
                cur.execute(
                    sql.SQL(
                        "DELETE FROM {t} WHERE id = ANY(%s) AND NOT EXISTS "
                        "(SELECT 1 FROM {s} WHERE {s}.id = {t}.id AND {s}.chunk = {t}.chunk)"
                    ).format(t=self._ident, s=stage),
                    [replace],
                )
            update = sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                for c in self._columns
                if c not in ("id", "chunk")
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {t} ({c}) SELECT {c} FROM {s} "
                    "ON CONFLICT (id, chunk) DO UPDATE SET {u}"
                ).format(t=self._ident, c=cols, s=stage, u=update)
            )

    def _vectors(self, column: Any) -> list[bytes]:
        """pgvector's binary form of each row: dim, 0, then big-endian values."""
        import numpy as np

        header, dtype = self._vec
        flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        dim = flat.type.list_size
        values = np.asarray(flat.values.to_numpy(zero_copy_only=False)).astype(dtype)
        matrix = values.reshape(-1, dim)
        return [header + row.tobytes() for row in matrix]

    def flush(self) -> None:
        """Nothing to do: every write is its own transaction."""

    def delete(self, ids: list[Any]) -> None:
        from psycopg import sql

        if ids:
            q = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._ident)
            self._run("deleting documents", self.conn.execute, q, [ids])

    def build_index(self) -> str:
        from psycopg import sql

        name = sql.Identifier(f"{self.table_name}_embedding_hnsw")
        ops = "halfvec_cosine_ops" if self._vec[1] == ">f2" else "vector_cosine_ops"
        q = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding {})").format(
            name, self._ident, sql.SQL(ops)
        )
        self._run("building the index", self.conn.execute, q)
        return f"HNSW index ({ops}) on embedding"

    def nearest(self, q: Any, k: int, where: str | None) -> list[dict[str, Any]]:
        """The ``k`` rows nearest ``q`` by cosine (pgvector's ``<=>``), best first."""
        from psycopg import sql

        found = self.table_metadata()
        if found is None:
            raise SinkError(f"{self.name} does not exist")
        shown = [c for c in ("id", "chunk", "text") if c in found[1]]
        vector = "[" + ",".join(repr(float(x)) for x in q) + "]"
        q_sql = sql.SQL(
            "SELECT {cols}, 1 - (embedding <=> %(q)s::vector) AS score FROM {t} {w} "
            "ORDER BY embedding <=> %(q)s::vector LIMIT %(k)s"
        ).format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in shown),
            t=self._ident,
            w=sql.SQL("WHERE " + where) if where else sql.SQL(""),
        )
        rows = self._run("searching", self.conn.execute, q_sql, {"q": vector, "k": k})
        return [dict(zip([*shown, "score"], r)) for r in rows.fetchall()]

    def close(self) -> None:
        self.conn.close()


def _sql_type(field: Any) -> tuple[str, int]:
    found = _SQL_TYPES.get(str(field.type))
    if found is None:
        raise UsageError(
            f"column {field.name!r} of type {field.type} has no PostgreSQL mapping here; "
            "leave it out of --keep or write Parquet/LanceDB"
        )
    return found


def _password(dsn: str) -> str:
    if "://" in dsn:
        return urlsplit(dsn).password or ""
    m = re.search(r"(?i)password\s*=\s*('[^']*'|\S+)", dsn)
    return m.group(1).strip("'") if m else ""


def _register_vector_dumper(conn: Any, oid: int | None) -> None:
    """Binary COPY of pre-encoded vectors (bytes) into a column of type ``oid``."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    if not oid:
        return

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            return bytes(obj)

    VectorDumper.oid = oid
    conn.adapters.register_dumper(None, VectorDumper)
