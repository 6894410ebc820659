"""Writing the output Parquet: a row group at a time, renamed into place on success.

Rows go to ``.<name>.tmp-<pid>`` beside the output; :meth:`OutputWriter.finish`
renames it to the output name, so a file with the output's name is always
complete. :meth:`OutputWriter.abort` keeps what was written as
``<stem>.partial.parquet`` (clearly not the finished file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.errors import EmbedgenError

_DISK_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT


class OutputWriter:
    def __init__(
        self,
        path: Path,
        *,
        dim: int,
        dtype: str,
        with_text: bool,
        id_type: Any,
        keep_schema: Any,
        with_model: bool,
        metadata: dict[str, str],
        with_sparse: bool = False,
    ) -> None:
        import pyarrow as pa

        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        value_type = pa.float16() if dtype == "float16" else pa.float32()
        self.np_dtype = np.float16 if dtype == "float16" else np.float32
        fields = [
            pa.field("id", id_type),
            pa.field("chunk", pa.int32()),
            pa.field("char_start", pa.int32()),
            pa.field("char_end", pa.int32()),
            pa.field("tokens", pa.int32()),
        ]
        if with_text:
            fields.append(pa.field("text", pa.string()))
        fields.append(pa.field("embedding", pa.list_(value_type, dim)))
        if with_sparse:
            fields.append(pa.field("sparse", pa.map_(pa.int32(), pa.float32())))
        if with_model:
            fields.append(pa.field("model", pa.string()))
        if keep_schema is not None:
            taken = {f.name for f in fields}
            for f in keep_schema:
                if f.name in taken:
                    raise EmbedgenError(
                        f"--keep column {f.name!r} clashes with an output column; rename it"
                    )
                fields.append(f)
        meta = {f"embedgen.{k}": v for k, v in metadata.items()}
        meta["embedgen"] = json.dumps(metadata, sort_keys=True)
        self.schema = pa.schema(fields, metadata=meta)
        self.dim = dim
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: Any = None
        self._open()

    def _open(self) -> None:
        import pyarrow.parquet as pq

        try:
            # Dictionary encoding suits ids and texts; tried on float vectors it costs ~10x the
            # write time for nothing, so only string columns get it.
            strings = [f.name for f in self.schema if str(f.type) in ("string", "large_string")]
            self._writer = pq.ParquetWriter(
                self.tmp, self.schema, compression="zstd", use_dictionary=strings
            )
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def write(self, columns: dict[str, Any], vectors: np.ndarray, keep: Any = None) -> None:
        """Append rows: plain columns, an (n, dim) matrix, and passthrough columns."""
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=self.np_dtype).reshape(-1))
        arrays: dict[str, Any] = dict(columns)
        arrays["embedding"] = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        if keep is not None:
            for name in keep.column_names:
                arrays[name] = keep.column(name)
        table = pa.Table.from_pydict(
            {f.name: arrays[f.name] for f in self.schema}, schema=self.schema
        )
        try:
            self._writer.write_table(table)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        self.rows += table.num_rows

    def finish(self) -> Path:
        try:
            self._writer.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        partial = partial_path(self.path)
        if partial.exists():
            partial.unlink()
        return self.path

    def abort(self) -> Path | None:
        """Close and keep the rows written so far as ``<stem>.partial.parquet``."""
        try:
            self._writer.close()
        except Exception:
            self.tmp.unlink(missing_ok=True)
            return None
        if self.rows == 0:
            self.tmp.unlink(missing_ok=True)
            return None
        partial = partial_path(self.path)
        os.replace(self.tmp, partial)
        return partial


def partial_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".parquet") + ".partial.parquet")


def _write_error(path: Path, exc: OSError) -> EmbedgenError:
    if exc.errno in _DISK_FULL_ERRNOS or "No space left" in str(exc):
        return EmbedgenError(
            f"disk full while writing {path}; free space and re-run (embedded chunks are "
            "kept in the cache, nothing is recomputed)"
        )
    return EmbedgenError(f"cannot write {path}: {exc.strerror or exc}")
