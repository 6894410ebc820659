"""Vector columns in every output type: written with their calibration, read back as float.

A run keeps full-precision vectors in its cache and turns them into the output type
only when it writes (``--vector-dtype``), so switching the type never re-embeds.
Each vector column is described in the file's key-value metadata under
``embedgen.vectors``: a JSON object keyed by column name, with the column's ``dtype``,
``dim`` and, for int8/uint8, the per-dimension ranges. Any reader maps a written column
back to float32 with :func:`to_float` (or :func:`read_float` for a whole file); files
written before this metadata existed hold float columns and read back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.errors import InputError, UsageError
from embedgen.util.quantize import (
    CALIBRATED,
    NUMPY_TYPES,
    Ranges,
    decode,
    dimension_problem,
    encode,
    stored_width,
)

META_KEY = "embedgen.vectors"
CALIBRATION_ROWS = 1024
"""int8/uint8 ranges are fitted on at least this many of a run's first chunks (or all)."""


@dataclass(frozen=True)
class VectorFormat:
    """How one vector column is written: its type, dimension and, when known, its ranges."""

    dtype: str
    dim: int
    ranges: Ranges | None = None
    """Given ranges (an API's native codes, ``--calibration FILE``); None: fitted on the
    first rows written."""
    column: str = "embedding"

    @property
    def needs_fit(self) -> bool:
        return self.dtype in CALIBRATED and self.ranges is None

    def arrow_type(self) -> Any:
        """Floats: ``fixed_size_list<float, dim>``; codes: ``fixed_size_binary(width)``.

        Parquet has no 8-bit integer column: a list of int8 is stored as int32 values with
        per-element levels (~560 bytes per 384-d vector after zstd), a fixed-size binary as
        exactly one byte per code (384).
        """
        import pyarrow as pa

        if self.dtype in ("float32", "float16"):
            value_type = pa.from_numpy_dtype(np.dtype(NUMPY_TYPES[self.dtype]))
            return pa.list_(value_type, self.dim)
        return pa.binary(stored_width(self.dtype, self.dim))

    def fitted(self, vectors: np.ndarray) -> VectorFormat:
        """This format with ranges fitted on ``vectors`` (the run's first chunks)."""
        if not self.needs_fit:
            return self
        ranges = Ranges.fit(vectors, f"fitted on the first {len(vectors):,} chunks of this run")
        return VectorFormat(self.dtype, self.dim, ranges, self.column)

    def column_array(self, vectors: np.ndarray) -> Any:
        """``(n, dim)`` float vectors as this column's Arrow array."""
        import pyarrow as pa

        codes = np.ascontiguousarray(encode(vectors, self.dtype, self.ranges))
        buffer = pa.py_buffer(codes.reshape(-1))
        arrow_type = self.arrow_type()
        if self.dtype not in ("float32", "float16"):
            return pa.Array.from_buffers(arrow_type, len(codes), [None, buffer])
        flat = pa.Array.from_buffers(arrow_type.value_type, codes.size, [None, buffer])
        return pa.FixedSizeListArray.from_arrays(flat, self.dim)

    def describe(self) -> dict[str, Any]:
        """This column's entry in ``embedgen.vectors``."""
        entry: dict[str, Any] = {"dtype": self.dtype, "dim": self.dim}
        if self.ranges is not None:
            entry["ranges"] = self.ranges.to_json()
        return entry


def output_format(info: Any, run: Any, column: str = "embedding") -> VectorFormat:
    """How a run writes ``info``'s vectors: ``run.vector_dtype`` (else ``run.dtype``).

    int8/uint8 codes an API answered natively (``details["native_dtype"]``) are written as
    they came; ``run.calibration`` names a file whose ranges to reuse; else the ranges are
    fitted on the run's first chunks. A binary type needs a dimension divisible by 8.
    """
    dtype = run.vector_dtype or run.dtype
    problem = dimension_problem(dtype, info.dim)
    if problem is not None:
        raise UsageError(problem)
    ranges = None
    if dtype in CALIBRATED:
        if info.details.get("native_dtype") == dtype:
            ranges = Ranges.identity(dtype, info.dim, f"native: {info.kind} answered {dtype}")
        elif run.calibration:
            ranges = calibration_from(run.calibration, dtype, info.dim)
    return VectorFormat(dtype, info.dim, ranges, column)


def described(metadata: dict[bytes, bytes] | None, fmt: VectorFormat) -> dict[str, str]:
    """Schema metadata with ``fmt``'s column described under ``embedgen.vectors``."""
    meta = {_text(k): _text(v) for k, v in (metadata or {}).items()}
    columns = json.loads(meta.get(META_KEY, "{}"))
    columns[fmt.column] = fmt.describe()
    meta[META_KEY] = json.dumps(columns, sort_keys=True)
    return meta


def column_format(metadata: dict[Any, Any] | None, column: str = "embedding") -> VectorFormat:
    """The format of ``column`` as its file describes it (float32 when not described)."""
    meta = {_text(k): _text(v) for k, v in (metadata or {}).items()}
    entry = json.loads(meta.get(META_KEY, "{}")).get(column)
    if entry is None:
        dtype = meta.get("embedgen.dtype", "float32")
        dim = int(meta.get("embedgen.dim", "0") or 0)
        if dtype not in ("float32", "float16"):
            raise InputError(f"column {column!r} is {dtype} but its file does not describe it")
        return VectorFormat(dtype, dim, None, column)
    ranges = Ranges.from_json(entry["ranges"]) if "ranges" in entry else None
    return VectorFormat(str(entry["dtype"]), int(entry["dim"]), ranges, column)


def to_float(values: Any, metadata: dict[Any, Any] | None, column: str = "embedding") -> np.ndarray:
    """A written vector column (Arrow array, chunked array or 2-D array) as ``(n, dim)`` float32.

    ``metadata`` is the file's schema metadata (``pq.read_schema(path).metadata``).
    float16 widens, int8/uint8 map back through the stored ranges (within half a step
    of the written value), binary/ubinary unpack to +1/-1 per dimension.
    """
    fmt = column_format(metadata, column)
    codes = _matrix(values, NUMPY_TYPES[fmt.dtype])
    if len(codes) == 0:
        return np.zeros((0, fmt.dim), dtype=np.float32)
    if fmt.dtype in CALIBRATED and fmt.ranges is None:
        raise InputError(f"column {column!r} is {fmt.dtype} but its file has no ranges for it")
    return decode(codes, fmt.dtype, fmt.ranges)


def read_float(path: str | Path, column: str = "embedding") -> np.ndarray:
    """Every vector of ``column`` in an embedgen Parquet file, as float32."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=[column])
    return to_float(table.column(column), table.schema.metadata, column)


def calibration_from(path: str | Path, dtype: str, dim: int, column: str = "embedding") -> Ranges:
    """int8/uint8 ranges to reuse: the ones a file was written with, else fitted on its floats.

    ``--calibration FILE`` gives several outputs one quantization, so their codes compare.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata
    except (OSError, ValueError) as exc:
        raise InputError(f"--calibration {path}: not a readable Parquet file ({exc})") from None
    fmt = column_format(meta, column)
    if fmt.ranges is not None and fmt.dim == dim:
        return fmt.ranges
    vectors = read_float(path, column)
    if vectors.ndim != 2 or vectors.shape[1] != dim or fmt.dtype not in ("float32", "float16"):
        raise UsageError(
            f"--calibration {path}: its {column!r} column is {fmt.dtype} of dim "
            f"{vectors.shape[-1] if vectors.size else fmt.dim}; need int8/uint8 ranges or "
            f"float vectors of dim {dim}"
        )
    return Ranges.fit(vectors, f"fitted on {len(vectors):,} vectors of {Path(path).name}")


def _matrix(values: Any, element: Any) -> np.ndarray:
    """A fixed-size list or fixed-size binary column as a 2-D array of ``element``."""
    import pyarrow as pa

    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_fixed_size_binary(values.type):
        width = values.type.byte_width
        data = values.buffers()[1]
        start = values.offset * width
        raw = np.frombuffer(data, dtype=element, count=len(values) * width, offset=start)
        return raw.reshape(-1, width)
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=element).reshape(-1, values.type.list_size)


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)
