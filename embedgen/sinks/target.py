"""What ``-o`` names: a Parquet file or ``DIR/``, a LanceDB table, or a PostgreSQL table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedgen.errors import UsageError

if TYPE_CHECKING:
    from embedgen.sinks.base import Sink

DEFAULT_TABLE = "chunks"
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_PG_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Target:
    """Where a run's rows go: ``kind`` is ``parquet``, ``lancedb`` or ``postgres``."""

    kind: str
    location: str
    """The Parquet path, the LanceDB directory, or the libpq connection string."""
    table: str = DEFAULT_TABLE

    @classmethod
    def parse(cls, text: str, table: str | None = None) -> Target:
        """``lancedb:PATH``, ``postgresql://...`` (any libpq URI), else a Parquet path."""
        name = table or DEFAULT_TABLE
        if text.startswith("lancedb:"):
            path = text.removeprefix("lancedb:").removeprefix("//")
            if not path:
                raise UsageError("-o lancedb:PATH needs a directory after 'lancedb:'")
            return cls("lancedb", path, _table_name(name, dots=False))
        if text.startswith(_PG_SCHEMES):
            return cls("postgres", text, _table_name(name, dots=True))
        return cls("parquet", text)

    @property
    def is_sink(self) -> bool:
        return self.kind != "parquet"

    @property
    def anchor(self) -> Path:
        """A local path standing for the target: its lock and skip list go beside it."""
        if self.kind == "lancedb":
            return Path(self.location) / self.table
        if self.kind == "postgres":
            return Path.cwd() / f"{self.table}.postgres"
        return Path(self.location)

    def __str__(self) -> str:
        if self.kind == "lancedb":
            return f"lancedb:{self.location} (table {self.table})"
        if self.kind == "postgres":
            from embedgen.sinks.pg import safe_dsn

            return f"{safe_dsn(self.location)} (table {self.table})"
        return self.location


def _table_name(name: str, *, dots: bool) -> str:
    if not _TABLE.match(name) or ("." in name and not dots):
        raise UsageError(
            f"--table {name!r}: expected letters, digits and underscores"
            + (" (schema.table allowed)" if dots else "")
        )
    return name


def open_sink(target: Target) -> Sink:
    """Connect to ``target``'s store (nothing is created or checked yet)."""
    if target.kind == "lancedb":
        from embedgen.sinks.lance import LanceSink

        return LanceSink(target.location, target.table)
    if target.kind == "postgres":
        from embedgen.sinks.pg import PgSink

        return PgSink(target.location, target.table)
    raise UsageError(f"{target} is not a sink")
