"""The Ray engine's first two stages: read units, and the chunk task that turns a unit into rows.

A read unit is one input file with the global row number of its first row (so ids and
skip records are those of the local engine), or, under ``--limit``, every file in one
unit cut after the first N documents. A chunk task reads its unit with the pipeline's
reader, applies the skip rules and chunks with the run's chunker (the same
:class:`~embedgen.pipeline.windows.Windows` stage the local engine uses), and yields one
Arrow table per window: a marker row (``_pos == -1``: the window's chunk count, document
count and skips) and one row per chunk with its order key (see :mod:`.reorder`).

The window table (:func:`window_table`; :func:`table_chunks` reads its chunks back):

==================  =====================  ==============================================
column              type                   on the marker row / on a chunk row
==================  =====================  ==============================================
``_unit``, ``_win`` int32                  the window's order key (both rows)
``_pos``            int32                  -1 / the chunk's position in the window
``_n``, ``_last``   int32, bool            chunk rows, last window of the unit / 0, false
``_docs``           int32                  input rows the window stands for / 0
``_skips``          string                 skip records, one JSON per line / null
``_tokenized``      int32                  documents tokenized (not indexed) / 0
``_doc_keys``,      list<binary>           document records to store once the window's
``_doc_records``                           vectors are cached (DocIndex) / null
``id``              input's id type        null / the document id
``chunk`` ...       int32                  0 / chunk number, char_start, char_end, tokens
``text``            string                 "" / the chunk text
``_input_ids``      list<int32>            null / model-ready ids (ONNX only)
``k:<name>``        as input               null / a ``--keep`` column
==================  =====================  ==============================================

An embedding worker appends ``embedding`` (fixed_size_list<float32>), ``_how`` (int8: 0
computed, 1 cached, 2 duplicate) and ``_x:<name>`` extra columns, and drops ``_input_ids``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from embedgen.pipeline.chunk import Chunk
    from embedgen.pipeline.windows import Window, Windows

KEEP_PREFIX = "k:"
"""Passthrough (``--keep``) columns travel as ``k:<name>``, clear of the engine's own."""


@dataclass(frozen=True)
class Unit:
    paths: tuple[str, ...]
    row0: int
    limit: int | None = None


def plan_units(paths: list[Path], limit: int | None) -> list[Unit]:
    """One unit per file, each knowing its first global row; one unit for a ``--limit`` run."""
    if limit is not None or len(paths) == 1:
        return [Unit(tuple(str(p) for p in paths), 0, limit)]
    units: list[Unit] = []
    row0 = 0
    for p in paths:
        units.append(Unit((str(p),), row0))
        row0 += count_input_rows(p)
    return units


def count_input_rows(path: Path) -> int:
    """Rows the reader will number in ``path``: Parquet rows, or non-blank JSONL lines."""
    from embedgen.pipeline.read import input_format, open_text, parquet_file

    if input_format(path) == "parquet":
        try:
            return int(parquet_file(path).metadata.num_rows)
        except Exception:
            return 0  # the chunk task reports the unreadable file
    n = 0
    with open_text(path) as fh:
        for raw in fh:
            if raw.strip():
                n += 1
    return n


def unit_documents(unit: Unit, opts: Any) -> Iterator[Any]:
    """The unit's document batches, numbered from its first global row."""
    from embedgen.pipeline.read import read_file
    from embedgen.pipeline.windows import limited

    paths = [Path(p) for p in unit.paths]
    if unit.limit is not None or len(paths) != 1:
        yield from limited(paths, opts, unit.limit)
        return
    yield from read_file(paths[0], opts, unit.row0)


def chunk_units(
    batch: dict[str, Any], *, windows: ChunkStage, opts: Any, with_ids: bool
) -> Iterator[Any]:
    """Ray ``map_batches`` function: every window of each unit in ``batch`` as one table."""
    os.environ.update(windows.env)  # s3:// inputs: the driver's settings, before reading
    for unit_no, raw in zip(batch["unit"], batch["spec"]):
        unit = Unit(**json.loads(raw))
        count = 0
        last: Any = None
        for docs in unit_documents(unit, opts):
            w = windows.window(docs)
            if last is not None:
                yield window_table(int(unit_no), count - 1, last, False, with_ids)
            last, count = w, count + 1
        yield window_table(int(unit_no), max(0, count - 1), last, True, with_ids)


def window_table(unit: int, win: int, w: Any, last: bool, with_ids: bool) -> Any:
    """One window as rows: the marker, then its chunks with their order key."""
    import pyarrow as pa

    chunks = w.chunks if w is not None else []
    n = len(chunks)
    skips = "\n".join(s.to_json() for s in w.skips) if w is not None else ""
    new = w.new_docs if w is not None else []
    ids = [w.docs.ids[i] for i in w.doc_index] if w is not None else []
    cols: dict[str, Any] = {
        "_unit": pa.array([unit] * (n + 1), pa.int32()),
        "_win": pa.array([win] * (n + 1), pa.int32()),
        "_pos": pa.array(range(-1, n), pa.int32()),
        "_n": pa.array([n] + [0] * n, pa.int32()),
        "_last": pa.array([last] + [False] * n),
        "_docs": pa.array([w.documents if w is not None else 0] + [0] * n, pa.int32()),
        "_skips": pa.array([skips] + [None] * n, pa.string()),
        "_tokenized": pa.array([w.tokenized if w is not None else 0] + [0] * n, pa.int32()),
        "_doc_keys": pa.array([[k for k, _ in new]] + [None] * n, pa.list_(pa.binary())),
        "_doc_records": pa.array([[r for _, r in new]] + [None] * n, pa.list_(pa.binary())),
        "id": _ids_array([None, *ids]),
        "chunk": pa.array([0] + [c.index for c in chunks], pa.int32()),
        "char_start": pa.array([0] + [c.char_start for c in chunks], pa.int32()),
        "char_end": pa.array([0] + [c.char_end for c in chunks], pa.int32()),
        "tokens": pa.array([0] + [c.tokens for c in chunks], pa.int32()),
        "text": pa.array([""] + [c.text for c in chunks], pa.string()),
    }
    if with_ids:
        cols["_input_ids"] = pa.array([None] + [c.input_ids for c in chunks], pa.list_(pa.int32()))
    keep = w.docs.keep if w is not None else None
    if keep is not None:
        taken = keep.take(pa.array(w.doc_index, pa.int64()))
        for name in taken.column_names:
            col = taken.column(name).combine_chunks()
            cols[KEEP_PREFIX + name] = pa.concat_arrays([pa.nulls(1, col.type), col])
    return pa.table(cols)


def table_chunks(table: Any) -> tuple[np.ndarray, list[Chunk]]:
    """The chunk rows of a window table (markers left out): their row numbers and chunks.

    The inverse of :func:`window_table` for what an embedding worker needs; a chunk's
    document number is not shipped (only the driver needs documents).
    """
    from embedgen.pipeline.chunk import Chunk

    rows = np.nonzero(table.column("_pos").to_numpy() >= 0)[0]
    n = table.num_rows
    text = table.column("text").to_pylist()
    index = table.column("chunk").to_pylist()
    start = table.column("char_start").to_pylist()
    end = table.column("char_end").to_pylist()
    tokens = table.column("tokens").to_pylist()
    ids_col = "_input_ids" in table.column_names
    input_ids = table.column("_input_ids").to_pylist() if ids_col else [None] * n
    chunks = [Chunk(0, index[i], start[i], end[i], text[i], tokens[i], input_ids[i]) for i in rows]
    return rows, chunks


def _ids_array(values: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # mixed types inside one window: the writer names the problem when it casts
        return pa.array([None if v is None else str(v) for v in values], pa.string())


_NODE_CACHES: dict[str, Any] = {}
"""The cache each chunk task process opened (once per process, for the document index)."""


class ChunkStage:
    """A chunk task's Windows stage, picklable.

    The driver's own :class:`~embedgen.pipeline.windows.Windows` when its tokenizer pickles
    (ONNX), else one built in the task's process from the config, once per process (hosted
    APIs' tokenizers; the first provider is built offline: its tokenizer, no API key). With
    ``fp_id``, the document index of the node's cache is opened in the task (a cache handle
    does not pickle), so unchanged documents are not tokenized again, as on the local engine.
    ``env``: the driver's S3 settings and credentials for ``s3://`` inputs, handed over in
    memory (never in a Ray runtime environment, which Ray logs).
    """

    def __init__(
        self,
        windows: Windows | None,
        cfg: Any,
        info: Any,
        fp_id: bytes | None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.windows = windows
        self.cfg = cfg
        self.info = info
        """The driver's chain metadata (the chunk size comes from it)."""
        self.fp_id = fp_id
        self.env = env or {}

    def window(self, docs: Any) -> Window:
        if self.windows is None:
            self.windows = self._build()
        if self.fp_id is not None and self.windows.index is None:
            from embedgen.pipeline.core import doc_index

            run = self.cfg.run
            self.windows.index = doc_index(run, _node_cache(run), self.fp_id, self.windows.chunker)
        return self.windows.window(docs)

    def _build(self) -> Windows:
        from embedgen.pipeline.targets import offline_api_provider
        from embedgen.pipeline.windows import Windows, make_chunker, read_options
        from embedgen.providers.factory import build_member, is_api

        name = (self.cfg.run.providers or ["local"])[0]
        pcfg = self.cfg.providers.get(name)
        first = offline_api_provider(name, pcfg) if is_api(pcfg) else build_member(self.cfg, name)
        chunker = make_chunker(first.tokenizer(), self.info, self.cfg.run)
        return Windows(chunker, read_options(self.cfg.run), None)


def _node_cache(run: Any) -> Any:
    from embedgen.pipeline.run import open_cache

    key = str(run.cache_dir)
    if key not in _NODE_CACHES:
        _NODE_CACHES[key] = open_cache(run)
    return _NODE_CACHES[key]


def portable_windows(
    windows: Windows, cfg: Any, info: Any, fp_id: bytes | None, env: dict[str, str]
) -> ChunkStage:
    """The chunk tasks' stage: ``windows`` itself if it pickles (an ONNX tokenizer does)."""
    from ray import cloudpickle

    try:
        cloudpickle.dumps(windows)
    except Exception:
        return ChunkStage(None, cfg, info, fp_id, env)
    return ChunkStage(windows, cfg, info, fp_id, env)
