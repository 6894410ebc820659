"""The output of a run with several model slots: one vector column per slot.

::

    id | chunk | char_start | char_end | tokens | text | embedding_<A> | embedding_<B> | ...
                                                         sparse_<A>, colbert_<A>, tokens_<B>

Every slot's columns carry their own metadata (model, provider, fingerprint, dim, dtype,
max tokens: ``embedgen.*`` keys on the Arrow field), and the file's ``embedgen`` metadata
lists the slots. ``tokens`` counts the first slot's tokens; ``tokens_<NAME>`` is written for
each other slot whose tokenizer counts differently. A slot that failed under
``--allow-missing`` has nulls in its columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.pipeline import vectors as vec
from embedgen.pipeline.columns import (
    base_fields,
    colbert_array,
    colbert_type,
    sparse_array,
    sparse_type,
)
from embedgen.pipeline.write import OutputWriter, arrow_array, output_metadata


@dataclass(frozen=True)
class SlotColumns:
    """What one slot writes: its name, its chain's metadata, its extra outputs."""

    name: str
    info: Any
    """The slot's ``ProviderInfo`` (its first member's)."""
    run: Any
    """The slot's ``RunConfig`` (dtype, dimensions, overlap)."""
    max_tokens: int
    fmt: vec.VectorFormat
    """How its vectors are written (column ``embedding_<NAME>``); never one still to fit."""
    extras: tuple[str, ...] = ()
    """``sparse``, ``colbert``: written as ``sparse_<NAME>``, ``colbert_<NAME>``."""
    own_tokens: bool = False
    """Write ``tokens_<NAME>`` (its tokenizer counts unlike the first slot's)."""

    @property
    def metadata(self) -> dict[str, str]:
        return {**output_metadata(self.info, self.run, self.max_tokens), "slot": self.name}


@dataclass
class SlotRows:
    """One slot's part of a window: vectors (None: the slot failed), extras, token counts."""

    vectors: np.ndarray | None
    extras: dict[str, list[Any]] = field(default_factory=dict)
    tokens: list[int] | None = None


class MultiWriter(OutputWriter):
    """An :class:`OutputWriter` with one vector column (and extras) per slot."""

    def __init__(
        self,
        path: Path,
        slots: list[SlotColumns],
        *,
        with_text: bool,
        id_type: Any,
        keep_schema: Any,
    ) -> None:
        import pyarrow as pa

        self.slots = slots
        self.vectors = slots[0].fmt
        self._pending = []  # rows held for fitting ranges: none here (formats come fitted)
        fields = base_fields(id_type, with_text=with_text)
        for s in slots:
            meta = {f"embedgen.{k}": v for k, v in s.metadata.items()}
            fields.append(pa.field(s.fmt.column, s.fmt.arrow_type(), metadata=meta))
            if "sparse" in s.extras:
                fields.append(pa.field(f"sparse_{s.name}", sparse_type()))
            if "colbert" in s.extras:
                dim = int(s.info.details["colbert_dim"])
                fields.append(pa.field(f"colbert_{s.name}", colbert_type(dim)))
            if s.own_tokens:
                fields.append(pa.field(f"tokens_{s.name}", pa.int32()))
        first = slots[0].metadata
        metadata = {
            "slots": ",".join(s.name for s in slots),
            "overlap": first["overlap"],
            "version": first["version"],
            "created": first["created"],
            "models": json.dumps({s.name: s.metadata for s in slots}, sort_keys=True),
            "vectors": json.dumps({s.fmt.column: s.fmt.describe() for s in slots}, sort_keys=True),
        }
        self._start(path, fields, keep_schema, metadata)

    def write_slots(self, columns: dict[str, Any], rows: list[SlotRows], keep: Any = None) -> None:
        """Append a window's rows: shared columns, then each slot's columns."""
        import pyarrow as pa

        n = len(columns["chunk"])
        arrays = dict(columns)
        for s, r in zip(self.slots, rows, strict=True):
            arrays[s.fmt.column] = (
                pa.nulls(n, s.fmt.arrow_type())
                if r.vectors is None
                else s.fmt.column_array(r.vectors)
            )
            missing: list[Any] = [None] * n
            if "sparse" in s.extras:
                arrays[f"sparse_{s.name}"] = sparse_array(r.extras.get("sparse", missing))
            if "colbert" in s.extras:
                dim = int(s.info.details["colbert_dim"])
                arrays[f"colbert_{s.name}"] = colbert_array(r.extras.get("colbert", missing), dim)
            if s.own_tokens:
                arrays[f"tokens_{s.name}"] = arrow_array(r.tokens, pa.int32())
        self.write_arrays(arrays, keep)
        return None
