"""A run into a sink (LanceDB, PostgreSQL): check first, skip unchanged documents, sync.

:class:`SinkRun` opens the sink before anything is embedded and refuses a table of
another model. Its :meth:`~SinkRun.sieve` takes every document whose fingerprint the
sink already holds out of the run (they cost nothing: not chunked, looked up or
written). :class:`SinkWriter` stands where a run's ``OutputWriter`` stands: it is given
each window's rows and replaces those documents in the sink, in one commit per window
(LanceDB gathers windows into larger commits). :meth:`SinkWriter.finish` prunes the
documents missing from the input when asked, and builds the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np

from embedgen.cache import doc_keys
from embedgen.errors import SinkMismatchError, UsageError
from embedgen.pipeline.read import DocBatch
from embedgen.pipeline.vectors import VectorFormat
from embedgen.pipeline.write import base_fields, id_arrow_type, output_metadata, window_columns
from embedgen.sinks import DOC_COLUMN, Known, Sink, Target, check_metadata, open_sink

log = logging.getLogger("embedgen")


def open_sink_run(spec: Any, info: Any) -> SinkRun | None:
    """The run's sink, connected and checked against the model ``info``; None for Parquet."""
    if spec.sink is None:
        return None
    run, out = spec.cfg.run, spec.cfg.output
    if run.sparse:
        raise UsageError("--sparse writes Parquet only; leave it out or use -o FILE.parquet")
    if (run.vector_dtype or run.dtype) not in ("float32", "float16"):
        raise UsageError(
            f"a sink stores float32 or float16 vectors; --vector-dtype {run.vector_dtype} "
            "writes Parquet only"
        )
    return SinkRun(spec.sink, sink_meta(info, run), overwrite=out.overwrite,
                   prune=out.mode == "sync", index=out.index)  # fmt: skip


def sink_meta(info: Any, run: Any) -> dict[str, str]:
    """What a sink table must have been written with for a run of ``info`` to go on in it."""
    return {"model": info.model, "fingerprint": info.fingerprint, "dim": str(info.dim),
            "dtype": run.dtype}  # fmt: skip


def sink_writer(
    sink: SinkRun, docs: Any, run: Any, info: Any, max_tokens: int, columns: tuple[str, ...]
) -> SinkWriter:
    """The writer into ``sink``, typed after the run's first document batch ``docs``."""
    id_type: Any = None
    if docs is not None and docs.ids:
        id_type = id_arrow_type(docs.ids) if run.id_column else None
    elif len(sink.known):  # every document so far was unchanged: the table has the type
        id_type = id_arrow_type(list(sink.known.docs)[:1])
    return sink.writer(
        id_column=run.id_column,
        schema_args={
            "dim": info.dim,
            "dtype": run.vector_dtype or run.dtype,
            "with_text": not run.no_text,
            "id_type": id_type if id_type is not None else id_arrow_type([0]),
            "keep_schema": docs.keep.schema if docs is not None and docs.keep is not None else None,
            "with_model": "model" in columns,
            "metadata": output_metadata(info, run, max_tokens),
        },
    )


class SinkRun:
    """The sink of one run and what it already holds."""

    def __init__(
        self, target: Target, meta: dict[str, str], *, overwrite: bool, prune: bool, index: bool
    ) -> None:
        self.target = target
        self.meta = meta
        self.overwrite = overwrite
        self.prune = prune
        self.index = index
        self.sink: Sink = open_sink(target)
        try:
            self.found = self.sink.table_metadata()
            if self.found is not None and not overwrite:
                check_metadata(self.sink, self.found, meta, self.found[1])  # model and dim
            self.known = Known([], [], []) if overwrite else self.sink.known()
        except BaseException:
            self.sink.close()
            raise
        if self.known.untrusted:
            log.warning(
                f"{self.known.untrusted:,} document(s) in {self.sink.name} are not one whole "
                "version written by embedgen (rows added or changed by hand); those in the input "
                "are rewritten, the others removed by --prune"
            )
        self.seen: set[Any] = set()
        self.unchanged = 0
        self.fp_id = b""
        self.params = ""

    def sieve_for(self, fp_id: bytes, chunker: Any) -> Any:
        """:meth:`sieve`, for documents of the model ``fp_id`` cut by ``chunker``."""
        from embedgen.pipeline.docindex import chunk_params

        self.fp_id, self.params = fp_id, chunk_params(chunker)
        return self.sieve

    def fingerprints(self, docs: DocBatch, rows: list[int]) -> list[bytes]:
        """The fingerprint of each of ``rows``: its document key, and its kept columns."""
        texts = [docs.texts[i] or "" for i in rows]
        keys = [k[-16:] for k in doc_keys(self.fp_id, self.params, texts)]
        if docs.keep is None or not docs.keep.num_columns:
            return keys
        kept = docs.keep.to_pylist()
        return [
            hashlib.blake2b(k + json.dumps(kept[i], default=str).encode(), digest_size=16).digest()
            for k, i in zip(keys, rows)
        ]

    def sieve(self, docs: DocBatch) -> tuple[DocBatch, int]:
        """``docs`` without the documents the sink holds unchanged, and how many those were."""
        rows = list(range(len(docs.ids)))
        for i in rows:
            doc_id = docs.ids[i]
            if doc_id in self.seen:
                raise UsageError(
                    f"document id {doc_id!r} appears twice in the input; a sink needs unique "
                    "ids (--id-column)"
                )
            self.seen.add(doc_id)
        if not len(self.known):
            return docs, 0
        with_text = [i for i in rows if docs.texts[i]]
        fps = dict(zip(with_text, self.fingerprints(docs, with_text)))
        stay = [i for i in rows if i not in fps or not self.known.unchanged(docs.ids[i], fps[i])]
        dropped = len(rows) - len(stay)
        if not dropped:
            return docs, 0
        self.unchanged += dropped
        return _take(docs, stay), dropped

    def writer(self, schema_args: dict[str, Any], id_column: str | None) -> SinkWriter:
        """The writer of this run's rows (``schema_args`` as for ``output_schema``)."""
        meta = schema_args["metadata"]
        schema = sink_schema(**schema_args)
        if self.found is not None and not self.overwrite:
            check_metadata(self.sink, self.found, meta, list(schema.names))
            if len(self.known) and str(id_arrow_type(list(self.known.docs)[:1])) != str(
                schema.field("id").type
            ):
                raise SinkMismatchError(
                    f"{self.sink.name} has ids of another type than this run's "
                    f"({schema.field('id').type}); pass --overwrite or write to another --table"
                )
        self.sink.create(schema, overwrite=self.overwrite)
        return SinkWriter(self, schema, id_column)

    def lines(self, written: int, docs: int, pruned: int, index: str | None) -> list[str]:
        out = [
            f"sink:      {self.unchanged:,} documents unchanged, {docs:,} written "
            f"({written:,} rows), {pruned:,} pruned"
        ]
        if index:
            out.append(f"index:     {index}")
        return out

    def close(self) -> None:
        self.sink.close()


class SinkWriter:
    """Stands where an ``OutputWriter`` stands: whole windows of documents into the sink."""

    def __init__(self, run: SinkRun, schema: Any, id_column: str | None) -> None:
        self.run = run
        self.schema = schema
        self.id_column = id_column
        vector_type = schema.field("embedding").type
        dtype = "float16" if str(vector_type.value_type) == "halffloat" else "float32"
        self.vectors = VectorFormat(dtype, vector_type.list_size)
        self.rows = 0
        self.docs = 0
        self.lines: list[str] = []

    def write_window(self, w: Any, vectors: np.ndarray, extras: dict[str, list[Any]]) -> None:
        """A window's rows; the earlier rows of its documents go in the same commit."""
        import pyarrow as pa

        replace = [i for i in w.docs.ids if i in self.run.known]
        if not w.chunks and not replace:
            return
        columns, keep = window_columns(
            w,
            self.schema,
            id_column=self.id_column,
            with_text="text" in self.schema.names,
            extras=extras,
        )
        docs = sorted(set(w.doc_index))
        fps = dict(zip(docs, self.run.fingerprints(w.docs, docs)))
        columns[DOC_COLUMN] = _fixed16([fps[i] for i in w.doc_index])
        columns["embedding"] = self.vectors.column_array(vectors)
        if keep is not None:
            columns.update({name: keep.column(name) for name in keep.column_names})
        table = pa.Table.from_pydict({f.name: columns[f.name] for f in self.schema}, self.schema)
        self.run.sink.write(table, replace)
        self.rows += table.num_rows
        self.docs += len(docs)

    def finish(self) -> None:
        run = self.run
        try:
            run.sink.flush()
            pruned = [i for i in run.known.docs if i not in run.seen] if run.prune else []
            run.sink.delete(pruned)
            index = None
            if run.index:
                started = time.perf_counter()
                what = run.sink.build_index()
                index = f"{what}, built in {time.perf_counter() - started:,.1f}s"
            self.lines = run.lines(self.rows, self.docs, len(pruned), index)
        finally:
            run.close()

    def abort(self) -> None:
        """Commit the whole documents gathered so far (a re-run goes on from them)."""
        try:
            self.run.sink.flush()
        except Exception as exc:  # the run's own error is the one reported
            log.warning(f"could not commit the last rows to the sink: {exc}")
        finally:
            self.run.close()


def sink_schema(
    *,
    dim: int,
    dtype: str,
    with_text: bool,
    id_type: Any,
    keep_schema: Any,
    with_model: bool,
    metadata: dict[str, str],
) -> Any:
    """A sink table's columns: the Parquet output's, then each row's document fingerprint."""
    import pyarrow as pa

    fields = base_fields(id_type, with_text=with_text)
    fields.append(pa.field("embedding", VectorFormat(dtype, dim).arrow_type()))
    if with_model:
        fields.append(pa.field("model", pa.string()))
    taken = {f.name for f in fields} | {DOC_COLUMN}
    for f in keep_schema or []:
        if f.name in taken:
            raise UsageError(f"--keep column {f.name!r} clashes with an output column; rename it")
        fields.append(f)
    fields.append(pa.field(DOC_COLUMN, pa.binary(16)))
    metadata["vector"] = str(VectorFormat(dtype, dim).arrow_type())  # checked by a later run
    meta = {b"embedgen": json.dumps(metadata, sort_keys=True).encode()}
    return pa.schema(fields, metadata=meta)


def _fixed16(values: list[bytes]) -> Any:
    import pyarrow as pa

    return pa.array(values, type=pa.binary(16))


def _take(docs: DocBatch, rows: list[int]) -> DocBatch:
    """The documents ``rows`` of ``docs`` (its dropped rows stay with it)."""
    import pyarrow as pa

    return DocBatch(
        ids=[docs.ids[i] for i in rows],
        texts=[docs.texts[i] for i in rows],
        keep=docs.keep.take(pa.array(rows, pa.int64())) if docs.keep is not None else None,
        skips=docs.skips,
        rows=docs.rows,
        file=docs.file,
        row_numbers=[docs.row_numbers[i] for i in rows],
        lines=[docs.lines[i] for i in rows] if docs.lines is not None else None,
    )
