"""Writing a Ray run's rows: one Parquet file like the local engine's, or a dataset directory.

Windows arrive here in input order (see :mod:`.reorder`). ``-o FILE.parquet`` goes
through the pipeline's own writer, so the file has the local engine's rows, schema and
key-value metadata. ``-o DIR/`` writes one shard per window, ``part-<unit>-<window>.parquet``
(names sort in input order; each shard is renamed into place complete, with the same
schema and metadata), and ``_embedgen.json`` describing the run and listing the shards.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedgen.engines.ray_units import KEEP_PREFIX
from embedgen.errors import UsageError
from embedgen.pipeline.ends import RunEnds, new_writer

if TYPE_CHECKING:
    from embedgen.pipeline.docindex import DocIndex

DESCRIPTION = "_embedgen.json"


class Rows:
    """Window tables turned into the writer's columns, vectors and passthrough columns."""

    def __init__(self, run: Any, dim: int, extra_columns: tuple[str, ...]) -> None:
        self.run = run
        self.dim = dim
        self.extra_columns = extra_columns

    def schema_args(self, table: Any) -> tuple[Any, Any]:
        """(id type, passthrough schema) of the output, from the first window's table."""
        import pyarrow as pa

        id_type: Any = pa.int64()
        if self.run.id_column:
            t = table.schema.field("id").type
            id_type = pa.int64() if pa.types.is_null(t) else t
        keep = [f for f in table.schema if f.name.startswith(KEEP_PREFIX)]
        keep_schema = (
            pa.schema([f.with_name(f.name[len(KEEP_PREFIX) :]) for f in keep]) if keep else None
        )
        return id_type, keep_schema

    def split(self, table: Any, schema: Any) -> tuple[dict[str, Any], np.ndarray, Any]:
        """A window's chunk rows (marker dropped) as writer columns, vectors, keep table."""
        import pyarrow as pa

        body = table.slice(1)
        id_type = schema.field("id").type
        try:
            ids = body.column("id").cast(id_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise UsageError(
                f"id column {self.run.id_column!r} has values of mixed types (expected {id_type})"
            ) from None
        columns: dict[str, Any] = {"id": ids}
        for name in ("chunk", "char_start", "char_end", "tokens"):
            columns[name] = body.column(name)
        if not self.run.no_text:
            columns["text"] = body.column("text")
        for name in self.extra_columns:
            columns[name] = body.column("_x:" + name)
        emb = body.column("embedding").combine_chunks()
        vectors = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        keep_cols = [c for c in body.column_names if c.startswith(KEEP_PREFIX)]
        keep = None
        if keep_cols:
            keep = body.select(keep_cols).rename_columns([c[len(KEEP_PREFIX) :] for c in keep_cols])
        return columns, vectors, keep


class DirSink:
    """``-o DIR/``: a shard per window, then ``_embedgen.json``."""

    def __init__(self, root: Path, rows: Rows, info: Any, max_tokens: int) -> None:
        self.root = root
        self.rows = rows
        self.info = info
        self.max_tokens = max_tokens
        self.shards: list[dict[str, Any]] = []
        from embedgen.pipeline.vectors import output_format

        self.vectors = output_format(info, rows.run)
        if self.vectors.needs_fit:
            raise UsageError(
                f"--vector-dtype {self.vectors.dtype} into a directory of shards needs one "
                "calibration for every shard: pass --calibration FILE (an earlier output)"
            )
        self._types: tuple[Any, Any] | None = None
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".part-*.tmp-*"):
            stale.unlink(missing_ok=True)

    def write(self, table: Any) -> None:
        """One window (marker first) as its shard; empty windows write none."""
        if self._types is None:
            self._types = self.rows.schema_args(table)
        if table.num_rows <= 1:
            return
        unit, win = int(table.column("_unit")[0].as_py()), int(table.column("_win")[0].as_py())
        name = f"part-{unit:05d}-{win:06d}.parquet"
        id_type, keep_schema = self._types
        writer = new_writer(self.root / name, info=self.info, run=self.rows.run,
                            max_tokens=self.max_tokens, extra_columns=self.rows.extra_columns,
                            id_type=id_type, keep_schema=keep_schema,
                            vectors=self.vectors)  # fmt: skip
        try:
            columns, vectors, keep = self.rows.split(table, writer.schema)
            writer.write(columns, vectors, keep)
        except BaseException:
            writer.abort()
            raise
        writer.finish()
        self.shards.append({"file": name, "rows": table.num_rows - 1})

    def finish(self, summary: dict[str, Any]) -> Path:
        """Drop shards of an earlier run that this one did not write; describe the dataset."""
        from embedgen.pipeline.write import output_metadata
        from embedgen.util.atomic import atomic_write_text

        mine = {s["file"] for s in self.shards}
        for old in self.root.glob("part-*.parquet"):
            if old.name not in mine:
                old.unlink()
        doc = {
            "format": "embedgen-dataset/1",
            "metadata": output_metadata(self.info, self.rows.run, self.max_tokens),
            "order": "shards in the listed (file name) order, rows in file order",
            "shards": self.shards,
            "rows": sum(s["rows"] for s in self.shards),
            "summary": summary,
        }
        atomic_write_text(self.root / DESCRIPTION, json.dumps(doc, indent=2, default=str) + "\n")
        return self.root


class Sink:
    """The driver's end: reorder, then the run's ends (count, skips, write, summary)."""

    def __init__(
        self,
        spec: Any,
        rows: Rows,
        info: Any,
        max_tokens: int,
        mode: str,
        dataset: bool,
        units: int,
    ) -> None:
        from embedgen.engines.reorder import Reorder

        self.spec = spec
        self.rows = rows
        self.info = info
        self.dataset = dataset
        out = spec.output
        self.spill = out.parent / f".{out.name}.spill-{os.getpid()}"
        self.reorder = Reorder(units, self.spill)
        skipped = out / "skipped.jsonl" if dataset else None
        self.ends = RunEnds(spec, info, mode=mode, columns=rows.extra_columns,
                            max_tokens=max_tokens, skipped_path=skipped)  # fmt: skip
        self.counters = self.ends.counters
        self.dir = DirSink(out, rows, info, max_tokens) if dataset else None
        self.index: DocIndex | None = None
        """The document index: a written window's new records are stored in it."""
        self.cache: Any = None
        """The driver's open cache, if any (else the summary opens it)."""

    def consume(self, batches: Any, actor: Any) -> Any:
        try:
            for batch in batches:
                self._count_cached(batch)
                for window in self.reorder.add(batch):
                    self._write(window)
            self.reorder.check_finished()
            if self.dir is not None:
                self.dir.finish(asdict(self.counters))
            else:
                self.ends.finish()
        except BaseException as exc:
            from embedgen.engines.ray_engine import worker_error

            err = worker_error(exc)  # the embedgen error a worker raised, unwrapped
            self.ends.failed(err)
            if err is not exc:
                raise err from None
            raise
        finally:
            self.ends.close()
            shutil.rmtree(self.spill, ignore_errors=True)
        return self._summary(actor)

    def _count_cached(self, batch: Any) -> None:
        import pyarrow.compute as pc

        body = pc.greater_equal(batch.column("_pos"), 0)
        how = batch.column("_how")
        c = self.counters
        for name, code in (("computed", 0), ("cached", 1), ("duplicate", 2)):
            n = pc.sum(pc.and_(body, pc.equal(how, code))).as_py() or 0
            setattr(c, name, getattr(c, name) + n)

    def _write(self, window: Any) -> None:
        import pyarrow.compute as pc

        skips = window.column("_skips")[0].as_py()
        if skips:
            self.ends.skips(skips.split("\n"))
        if self.dir is not None:
            self.dir.write(window)
        else:
            writer = self.ends.writer or self.ends.open_writer(*self.rows.schema_args(window))
            if window.num_rows > 1:
                columns, vectors, keep = self.rows.split(window, writer.schema)
                writer.write(columns, vectors, keep)
        if self.index is not None:
            keys, records = window.column("_doc_keys")[0].as_py(), window.column("_doc_records")[0]
            if keys:  # every row of the window came from a worker: its vectors are cached
                self.index.put(list(zip(keys, records.as_py())))
        documents = int(window.column("_docs")[0].as_py())
        tokens = int(pc.sum(window.column("tokens")).as_py() or 0)
        tokenized = int(window.column("_tokenized")[0].as_py())
        self.ends.counted(documents, window.num_rows - 1, tokens, tokenized)

    def _summary(self, actor: Any) -> Any:
        from embedgen.cache import fingerprint_id
        from embedgen.pipeline.run import open_cache
        from embedgen.router import ProviderStats

        stats: dict[str, Any] = {}
        if actor is not None:
            merged = self.ray_get(actor.stats.remote())
            stats = {name: ProviderStats(name=name, **{k: int(v) if k != "seconds" else v
                                                        for k, v in st.items()})
                     for name, st in merged.items()}  # fmt: skip
        fp_id = fingerprint_id(self.info.fingerprint)
        cache = self.cache if self.cache is not None else open_cache(self.spec.cfg.run)
        try:
            return self.ends.summary(cache=cache, fp_id=fp_id, provider_stats=stats)
        finally:
            if cache is not None and cache is not self.cache:
                cache.close()

    @staticmethod
    def ray_get(ref: Any) -> Any:
        import ray

        return ray.get(ref)
