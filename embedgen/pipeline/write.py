"""Stage 6: write the output Parquet, a row group at a time, renamed into place on success.

Rows go to ``.<name>.tmp-<pid>`` beside the output; :meth:`OutputWriter.finish`
renames it to the output name, so a file with the output's name is always
complete. :meth:`OutputWriter.abort` keeps what was written as
``<stem>.partial.parquet`` (clearly not the finished file).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.errors import EmbedgenError, UsageError
from embedgen.pipeline import vectors as vec
from embedgen.pipeline.columns import (
    base_fields,
    colbert_array,
    colbert_type,
    sparse_array,
    sparse_type,
)
from embedgen.util.atomic import replace_durably

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
        colbert_dim: int | None = None,
        vectors: vec.VectorFormat | None = None,
    ) -> None:
        import pyarrow as pa

        self.vectors = vectors or vec.VectorFormat(dtype, dim)
        self._pending: list[tuple[dict[str, Any], np.ndarray, Any]] = []
        fields = base_fields(id_type, with_text=with_text)
        fields.append(pa.field("embedding", self.vectors.arrow_type()))
        if with_sparse:
            fields.append(pa.field("sparse", sparse_type()))
        if colbert_dim is not None:
            fields.append(pa.field("colbert", colbert_type(colbert_dim)))
        if with_model:
            fields.append(pa.field("model", pa.string()))
        self.dim = dim
        self._start(path, fields, keep_schema, metadata)

    def _start(
        self, path: Path, fields: list[Any], keep_schema: Any, metadata: dict[str, str]
    ) -> None:
        """Open the temporary file for ``fields`` + the passthrough columns."""
        import pyarrow as pa

        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if keep_schema is not None:
            taken = {f.name for f in fields}
            for f in keep_schema:
                if f.name in taken:
                    raise UsageError(
                        f"--keep column {f.name!r} clashes with an output column; rename it"
                    )
                fields.append(f)
        meta = {f"embedgen.{k}": v for k, v in metadata.items()}
        meta["embedgen"] = json.dumps(metadata, sort_keys=True)
        self.schema = pa.schema(fields, metadata=meta)
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: Any = None
        if not self.vectors.needs_fit:
            self._open()

    def _open(self) -> None:
        import pyarrow.parquet as pq

        # the vector column described: int8/uint8 once its ranges are fitted
        self.schema = self.schema.with_metadata(vec.described(self.schema.metadata, self.vectors))
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
        """Append rows: plain columns, an (n, dim) matrix, passthrough columns (int8/uint8 rows
        are held until ``CALIBRATION_ROWS`` or the end, to fit ranges)."""
        self._pending.append((columns, vectors, keep))
        if (
            self._writer is not None
            or sum(len(v) for _, v, _ in self._pending) >= vec.CALIBRATION_ROWS
        ):
            self._fit_and_open()

    def _fit_and_open(self) -> None:
        """Write the held rows, first opening the file (int8/uint8: ranges fitted on them)."""
        pending, self._pending = self._pending, []
        if self._writer is None:
            if pending:
                self.vectors = self.vectors.fitted(np.concatenate([v for _, v, _ in pending]))
            self._open()
        for columns, vectors, keep in pending:
            self.write_arrays({**columns, "embedding": self.vectors.column_array(vectors)}, keep)

    def write_arrays(self, arrays: dict[str, Any], keep: Any = None) -> None:
        """Append rows: every column of the schema, as Arrow arrays, plus passthrough."""
        import pyarrow as pa

        if keep is not None:
            arrays = {**arrays, **{name: keep.column(name) for name in keep.column_names}}
        table = pa.Table.from_pydict(
            {f.name: arrays[f.name] for f in self.schema}, schema=self.schema
        )
        try:
            self._writer.write_table(table)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        self.rows += table.num_rows

    def finish(self, footer: dict[str, str] | None = None) -> Path:
        """Close the file (``footer``: key-value metadata added to it) and rename it into
        place."""
        self._fit_and_open()
        try:
            if footer:
                self._writer.add_key_value_metadata(footer)
            self._writer.close()
            replace_durably(self.tmp, self.path)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        partial = partial_path(self.path)
        if partial.exists():
            partial.unlink()
        return self.path

    def abort(self) -> Path | None:
        """Close and keep the rows written so far as ``<stem>.partial.parquet``."""
        try:
            self._fit_and_open()
            self._writer.close()
        except Exception:
            self.tmp.unlink(missing_ok=True)
            return None
        if self.rows == 0:
            self.tmp.unlink(missing_ok=True)
            return None
        partial = partial_path(self.path)
        replace_durably(self.tmp, partial)
        return partial


class QueuedWrites:
    """Calls ``write`` on one background thread, in the order submitted.

    The run embeds the next windows while earlier ones are encoded and written. At most
    ``max_pending`` calls wait at a time (bounding memory: a cached run, whose writer is its
    slowest stage, keeps that many windows queued, ~4 MB each for 2,048 short chunks); a
    failed write raises its error from the next :meth:`submit` or from :meth:`drain`.
    """

    def __init__(self, write: Callable[..., None], max_pending: int = 2) -> None:
        self._write = write
        self._max_pending = max_pending
        self._pending: list[Future[None]] = []
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, *args: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="embedgen-write")
        pending = []
        for f in self._pending:
            if f.done():
                f.result()
            else:
                pending.append(f)
        if len(pending) >= self._max_pending:
            pending.pop(0).result()
        pending.append(self._pool.submit(self._write, *args))
        self._pending = pending

    def drain(self, *, check: bool = True) -> None:
        """Wait for every queued write; raise the first failure when ``check``."""
        pending, self._pending = self._pending, []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if check:
            for f in pending:
                f.result()


def partial_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".parquet") + ".partial.parquet")


def _write_error(path: Path, exc: OSError) -> EmbedgenError:
    if exc.errno in _DISK_FULL_ERRNOS or "No space left" in str(exc):
        return EmbedgenError(
            f"disk full while writing {path}; free space and re-run (embedded chunks are "
            "kept in the cache, nothing is recomputed)"
        )
    return EmbedgenError(f"cannot write {path}: {exc.strerror or exc}")


def output_metadata(info: Any, run: Any, max_tokens: int) -> dict[str, str]:
    """The file's key-value metadata: model, fingerprint, dim, dtype, chunking, version."""
    from datetime import datetime, timezone

    from embedgen import __version__

    meta = {
        "model": info.model,
        "provider": info.name,
        "kind": info.kind,
        "fingerprint": info.fingerprint,
        "dim": str(info.dim),
        "dtype": run.vector_dtype or run.dtype,
        "max_tokens": str(max_tokens),
        "overlap": str(run.overlap),
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update({k: v for k, v in info.details.items() if k not in meta})
    return meta


def window_columns(
    w: Any, schema: Any, *, id_column: str | None, with_text: bool, extras: dict[str, list[Any]]
) -> tuple[dict[str, Any], Any]:
    """A window's output columns (all but the vectors) and its passthrough columns."""
    import pyarrow as pa

    ch = w.chunks
    idx = w.doc_index
    ids = [w.docs.ids[i] for i in idx]
    try:
        id_arr = arrow_array(ids, schema.field("id").type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise UsageError(
            f"id column {id_column!r} has values of mixed types "
            f"(expected {schema.field('id').type})"
        ) from None
    columns: dict[str, Any] = {
        "id": id_arr,
        "chunk": arrow_array([c.index for c in ch], pa.int32()),
        "char_start": arrow_array([c.char_start for c in ch], pa.int32()),
        "char_end": arrow_array([c.char_end for c in ch], pa.int32()),
        "tokens": arrow_array([c.tokens for c in ch], pa.int32()),
    }
    if with_text:
        columns["text"] = arrow_array([c.text for c in ch], pa.string())
    if "sparse" in extras:
        columns["sparse"] = sparse_array(extras["sparse"])
    if "colbert" in extras:
        dim = schema.field("colbert").type.value_type.list_size
        columns["colbert"] = colbert_array(extras["colbert"], dim)
    if "model" in extras:
        columns["model"] = arrow_array(extras["model"], pa.string())
    keep = w.docs.keep.take(arrow_array(idx, pa.int64())) if w.docs.keep is not None else None
    return columns, keep


_NUMPY_TYPES = {"int32": np.int32, "int64": np.int64, "float": np.float32, "halffloat": np.float16}


def arrow_array(values: Any, arrow_type: Any) -> Any:
    """``pa.array(values, type=arrow_type)``, built from buffers for numbers and strings.

    ``pa.array`` first asks whether ``values`` is a pandas object, and that imports pandas
    wherever it is installed: 0.2-0.4 s of every run, for nothing. Anything else (other
    types, nulls, a value of the wrong type) goes through ``pa.array`` and its errors.
    """
    import pyarrow as pa

    name = str(arrow_type)
    if name in _NUMPY_TYPES and (
        isinstance(values, np.ndarray) or all(type(v) is int for v in values)
    ):
        with contextlib.suppress(OverflowError, ValueError):
            arr = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[name])
            if arr.ndim == 1:
                return pa.Array.from_buffers(arrow_type, len(arr), [None, pa.py_buffer(arr)])
    elif name == "string" and all(type(v) is str for v in values):
        with contextlib.suppress(UnicodeEncodeError):
            data = [v.encode("utf-8") for v in values]
            offsets = np.zeros(len(data) + 1, dtype=np.int64)
            np.cumsum([len(d) for d in data], out=offsets[1:])
            if offsets[-1] < 2**31:
                buffers = [
                    None,
                    pa.py_buffer(offsets.astype(np.int32)),
                    pa.py_buffer(b"".join(data)),
                ]
                return pa.Array.from_buffers(arrow_type, len(data), buffers)
    return pa.array(values, type=arrow_type)


def id_arrow_type(ids: list[Any]) -> Any:
    """The Arrow type of an id column's values (as ``pa.array(ids).type`` would say)."""
    import pyarrow as pa

    if ids and all(type(v) is int for v in ids):
        return pa.int64()
    if ids and all(type(v) is str for v in ids):
        return pa.string()
    return pa.array(ids).type
