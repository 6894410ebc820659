"""The two ends of a run, on any engine: progress, skip file, the output, failure, summary.

::

    ends = RunEnds(spec, info, mode=mode, columns=columns, max_tokens=...)
    try:
        ends.skips(lines); ends.open_writer(id_type, keep); ends.writer.write(...)
        ends.counted(documents, chunks, tokens)          # per written window
        ends.finish()
    except BaseException as exc:
        ends.failed(exc, committed=..., cache=...)      # exc.kept: what was kept
        raise
    finally:
        ends.close()
    return ends.summary(...)

The local engine and the Ray driver both go through this class, so what a run reports
(counters, the skip list, the kept partial file, the summary) is built in one place.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.errors import EmbedgenError, Kept
from embedgen.pipeline.progress import Counters, Progress
from embedgen.pipeline.read import count_rows
from embedgen.pipeline.summary import RunSummary
from embedgen.pipeline.vectors import VectorFormat, output_format
from embedgen.pipeline.write import OutputWriter, id_arrow_type, output_metadata

if TYPE_CHECKING:
    from embedgen.pipeline.sink_write import SinkRun, SinkWriter
    from embedgen.pipeline.spec import RunSpec
    from embedgen.providers.base import ProviderInfo


class RunEnds:
    """A run's prologue (progress, writer) and epilogue (failure report, summary)."""

    def __init__(
        self,
        spec: RunSpec,
        info: ProviderInfo,
        *,
        mode: str,
        columns: tuple[str, ...],
        max_tokens: int,
        skipped_path: Path | None = None,
        sink: SinkRun | None = None,
        stamp: str | None = None,
    ) -> None:
        self.spec = spec
        self.stamp = stamp
        """What decided this run's rows (:mod:`.up_to_date`), stamped on the finished file."""
        self.sink = sink
        """The LanceDB or PostgreSQL table the rows go into, instead of the output file."""
        self.info = info
        self.columns = columns
        self.max_tokens = max_tokens
        self.skipped_path = skipped_path or spec.skipped_path
        self.counters = Counters()
        self.writer: OutputWriter | None = None
        self.into: SinkWriter | None = None
        """The sink's writer, when the rows go into a sink."""
        self._skip_file: Any = None
        self.started = time.perf_counter()
        total = count_rows(list(spec.paths))
        limit = spec.cfg.run.limit
        if limit is not None and total is not None:
            total = min(total, limit)
        self.progress = Progress(total, mode=mode)

    def skips(self, lines: list[str]) -> None:
        """Record skipped documents (one JSON line each) in the skip file."""
        if not lines:
            return
        if self._skip_file is None:
            self.skipped_path.parent.mkdir(parents=True, exist_ok=True)
            self._skip_file = self.skipped_path.open("w", encoding="utf-8")
        for line in lines:
            self._skip_file.write(line + "\n")
        self._skip_file.flush()
        self.counters.skipped += len(lines)

    def counted(self, documents: int, chunks: int, tokens: int, tokenized: int) -> None:
        """A window's rows are on their way out: count them, show progress."""
        c = self.counters
        c.tokenized += tokenized
        c.documents += documents
        c.chunks += chunks
        c.tokens += tokens
        self.progress.update(c)

    def open_writer(self, id_type: Any, keep_schema: Any) -> OutputWriter:
        """The output file's writer, typed after the first window."""
        self.writer = new_writer(self.spec.output, info=self.info, run=self.spec.cfg.run,
                                 max_tokens=self.max_tokens, extra_columns=self.columns,
                                 id_type=id_type, keep_schema=keep_schema)  # fmt: skip
        return self.writer

    def open_for(self, docs: Any) -> None:
        """The writer (the sink's, or the output file's), typed after the first window's
        documents ``docs`` (None: no window came)."""
        if self.sink is None:
            self.open_writer(*writer_types(docs, self.spec.cfg.run))
            return
        from embedgen.pipeline.sink_write import sink_writer

        self.into = sink_writer(self.sink, docs, self.spec.cfg.run, self.info,
                                self.max_tokens, self.columns)  # fmt: skip

    @property
    def opened(self) -> bool:
        return self.writer is not None or self.into is not None

    def finish(self) -> None:
        """Rename the output into place, or sync the sink (an empty output when no window
        came)."""
        if not self.opened:
            self.open_for(None)
        if self.into is not None:
            self.into.finish()
        elif self.writer is not None:
            from embedgen.pipeline.up_to_date import stamped

            self.writer.finish(stamped(self.stamp, self.counters))

    def failed(
        self, exc: BaseException, *, committed: int | None = None, cache: Any = None
    ) -> None:
        """Keep the rows written so far, and say on ``exc`` what was kept (``exc.kept``).

        ``committed``: chunks this process committed to the cache (None: not known here).
        """
        partial = self.writer.abort() if self.writer is not None else None
        if self.into is not None:
            self.into.abort()  # commits the whole documents gathered so far
        if isinstance(exc, (EmbedgenError, KeyboardInterrupt)):  # Ctrl-C says it too
            where = str(cache.path) if cache is not None else None
            vars(exc)["kept"] = Kept(partial, committed, where)

    def close(self) -> None:
        self.progress.close()
        if self._skip_file is not None:
            self._skip_file.close()
            self._skip_file = None

    def summary(
        self, *, cache: Any, fp_id: bytes, provider_stats: dict[str, Any], seconds: float = 0.0
    ) -> RunSummary:
        """What the run did; recorded in the cache's statistics, the skip file tidied."""
        c = self.counters
        if cache is not None:
            cache.record_run(c.cached, c.computed, fp_id)
        if not c.skipped and self.skipped_path.exists():
            self.skipped_path.unlink()
        return RunSummary.of(
            c,
            output=self.spec.output,
            skipped_path=self.skipped_path,
            info=self.info,
            seconds=seconds,
            provider_stats=provider_stats,
            mixed_models="model" in self.columns,
            target=str(self.spec.sink) if self.spec.sink is not None else None,
            sink_lines=self.into.lines if self.into is not None else [],
        )


def writer_types(docs: Any, run: Any) -> tuple[Any, Any]:
    """(id type, passthrough schema) of a run's output, from its first document batch."""
    import pyarrow as pa

    id_type: Any = pa.int64()
    keep_schema = None
    if docs is not None and docs.ids:
        if run.id_column:
            id_type = id_arrow_type(docs.ids)
        keep_schema = docs.keep.schema if docs.keep is not None else None
    return id_type, keep_schema


def new_writer(
    path: Path,
    *,
    info: Any,
    run: Any,
    max_tokens: int,
    extra_columns: tuple[str, ...],
    id_type: Any,
    keep_schema: Any,
    vectors: VectorFormat | None = None,
) -> OutputWriter:
    """A writer of the run's rows (one output file, or one shard of a dataset) at ``path``;
    ``vectors``: the output's vector format (else the run's)."""
    return OutputWriter(
        path,
        dim=info.dim,
        dtype=run.dtype,
        with_text=not run.no_text,
        id_type=id_type,
        keep_schema=keep_schema,
        with_model="model" in extra_columns,
        with_sparse="sparse" in extra_columns,
        colbert_dim=int(info.details["colbert_dim"]) if "colbert" in extra_columns else None,
        metadata=output_metadata(info, run, max_tokens),
        vectors=vectors or output_format(info, run),
    )
