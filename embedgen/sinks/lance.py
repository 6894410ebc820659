"""LanceDB (embedded, ``embedgen[lance]``): a table in a local directory.

Writes are gathered into commits of at least :data:`COMMIT_ROWS` rows (many small
commits make many small fragments). A commit that only adds documents is an append; one
that replaces documents is a ``merge_insert`` on (id, chunk) that also deletes the
replaced documents' other rows, so it is one new table version either way.
"""

from __future__ import annotations

from typing import Any

from embedgen.errors import SinkError, UsageError
from embedgen.sinks.base import DOC_COLUMN, META_KEY, Known, Sink, load_metadata, sql_literal

COMMIT_ROWS = 16384


class LanceSink(Sink):
    def __init__(self, path: str, table: str) -> None:
        try:
            import lancedb
        except ImportError:
            raise UsageError("-o lancedb: needs LanceDB: pip install 'embedgen[lance]'") from None
        self.name = f"LanceDB table {table!r} in {path}"
        self.table_name = table
        try:
            self.db = lancedb.connect(path)
        except (OSError, ValueError) as exc:
            raise SinkError(f"cannot open LanceDB at {path}: {exc}") from None
        self.table: Any = None
        self._pending: list[Any] = []
        self._replace: list[Any] = []
        self._rows = 0

    def _open(self) -> Any:
        if self.table is None:
            try:
                self.table = self.db.open_table(self.table_name)
            except ValueError:  # LanceDB's "Table ... was not found"
                return None
        return self.table

    def table_handle(self) -> Any:
        """The open table (for reading); InputError when there is none."""
        from embedgen.errors import InputError

        table = self._open()
        if table is None:
            raise InputError(f"{self.name} does not exist")
        return table

    def table_metadata(self) -> tuple[dict[str, str], list[str]] | None:
        table = self._open()
        if table is None:
            return None
        schema = table.schema
        raw = (schema.metadata or {}).get(META_KEY.encode())
        return load_metadata(raw), list(schema.names)

    def known(self) -> Known:
        table = self._open()
        if table is None:
            return Known([], [], [])
        cols = ["id", "chunk", DOC_COLUMN]
        rows = table.search().select(cols).limit(None).to_arrow()
        return Known(*(rows.column(c).to_pylist() for c in cols))

    def create(self, schema: Any, *, overwrite: bool) -> None:
        if self._open() is not None and not overwrite:
            return
        mode = "overwrite" if overwrite else "create"
        try:
            self.table = self.db.create_table(self.table_name, schema=schema, mode=mode)
        except OSError as exc:
            raise SinkError(f"cannot create {self.name}: {exc}") from None

    def write(self, table: Any, replace: list[Any]) -> None:
        self._pending.append(table)
        self._replace.extend(replace)
        self._rows += table.num_rows
        if self._rows >= COMMIT_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self._pending and not self._replace:
            return
        rows = pa.concat_tables(self._pending) if self._pending else None
        replace = self._replace
        try:
            if not replace:
                self.table.add(rows)
            elif rows is None or rows.num_rows == 0:
                self.table.delete(_in_filter(replace))
            else:
                (
                    self.table.merge_insert(["id", "chunk"])
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(_in_filter(replace))
                    .execute(rows)
                )
        except OSError as exc:
            raise SinkError(f"cannot write {self.name}: {exc}") from None
        self._pending, self._replace, self._rows = [], [], 0

    def delete(self, ids: list[Any]) -> None:
        if ids:
            self.table.delete(_in_filter(ids))

    def build_index(self) -> str:
        rows = self.table.count_rows()
        if rows < 256:
            return f"no index: {rows} rows are too few to train one (search scans them)"
        from lancedb.index import IvfPq

        self.table.create_index("embedding", config=IvfPq(distance_type="cosine"))
        return "IVF_PQ index (cosine) on embedding"

    def close(self) -> None:
        self.table = None


def _in_filter(ids: list[Any]) -> str:
    return "id IN (" + ", ".join(sql_literal(i) for i in ids) + ")"
