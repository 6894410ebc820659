"""Output column types beyond the vector: the shared leading columns, sparse weights and
ColBERT multi-vectors, as Arrow types and arrays (one place for both writers)."""

from __future__ import annotations

from typing import Any

import numpy as np


def base_fields(id_type: Any, *, with_text: bool) -> list[Any]:
    """The columns every output has before its vectors: id, chunk, span, tokens, text."""
    import pyarrow as pa

    fields = [
        pa.field("id", id_type),
        pa.field("chunk", pa.int32()),
        pa.field("char_start", pa.int32()),
        pa.field("char_end", pa.int32()),
        pa.field("tokens", pa.int32()),
    ]
    if with_text:
        fields.append(pa.field("text", pa.string()))
    return fields


def sparse_type() -> Any:
    """``map<int32, float32>``: token id -> lexical weight."""
    import pyarrow as pa

    return pa.map_(pa.int32(), pa.float32())


def colbert_type(dim: int) -> Any:
    """``list<fixed_size_list<float32, dim>>``: one vector per token, per chunk."""
    import pyarrow as pa

    return pa.list_(pa.list_(pa.float32(), dim))


def sparse_array(values: list[dict[int, float] | None]) -> Any:
    """A sparse column from per-chunk token id -> weight dicts (None: a null row)."""
    import pyarrow as pa

    return pa.array([None if d is None else sorted(d.items()) for d in values], type=sparse_type())


def colbert_array(values: list[np.ndarray | None], dim: int) -> Any:
    """A ColBERT column from per-chunk (tokens, dim) matrices (None: a null row)."""
    import pyarrow as pa

    lengths = [0 if v is None else len(v) for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mats = [v for v in values if v is not None]
    flat = np.ascontiguousarray(np.concatenate(mats) if mats else np.zeros((0, dim)), np.float32)
    floats = pa.Array.from_buffers(pa.float32(), flat.size, [None, pa.py_buffer(flat)])
    inner = pa.FixedSizeListArray.from_arrays(floats, dim)
    starts = pa.Array.from_buffers(pa.int32(), len(offsets), [None, pa.py_buffer(offsets)])
    mask = pa.array([v is None for v in values]) if any(v is None for v in values) else None
    return pa.ListArray.from_arrays(starts, inner, mask=mask)
