"""One embedding run: wires read → chunk → key → cache → batch → embed → check → write.

Reading and chunking run in a producer thread, one document batch ahead, while
the main thread embeds and writes; results are written in input order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from embedgen import __version__
from embedgen.config import Config, OnnxConfig, RunConfig, apply_overrides, load
from embedgen.errors import BudgetExceeded, ConfigError, EmbedgenError, ProviderError
from embedgen.pipeline.batch import plan_batches
from embedgen.pipeline.chunk import Chunk, Chunker
from embedgen.pipeline.progress import Counters, Progress
from embedgen.pipeline.read import (
    DocBatch,
    ReadOptions,
    Skip,
    count_rows,
    discover_inputs,
    read_documents,
)
from embedgen.pipeline.write import OutputWriter
from embedgen.providers.base import Batch, EmbedResult, Provider

log = logging.getLogger("embedgen")

_RESULT_FIELD = {"sparse": "sparse", "model": "models"}
"""Extra output column -> the EmbedResult field that fills it."""
_ALIASES = {"threads": "num_threads", "model_path": "model"}


@dataclass
class RunSummary:
    output: Path | None
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    skipped: int = 0
    cached: int = 0
    computed: int = 0
    seconds: float = 0.0
    skipped_path: Path | None = None
    model: str = ""
    dim: int = 0
    provider_stats: dict[str, Any] = field(default_factory=dict)
    """Per API provider: requests, retries, failures, breaker openings, tokens, seconds."""
    mixed_models: bool = False
    budget_lines: list[str] = field(default_factory=list)
    """What the run spent, per provider (when any provider has a price)."""

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = self._lines()
        for name, st in self.provider_stats.items():
            out.append(
                f"provider {name}: {st.requests:,} requests, {st.retries:,} retries, "
                f"{st.failures:,} failures ({st.rate_limited:,} rate-limited), "
                f"{st.breaker_openings:,} breaker openings, {st.tokens:,} tokens, "
                f"{st.seconds:,.1f}s"
            )
        out.extend(self.budget_lines)
        if self.mixed_models:
            out.append("warning: rows were embedded by different models (see the model column)")
        return out

    def _lines(self) -> list[str]:
        out = [
            f"documents: {self.documents:,}",
            f"chunks:    {self.chunks:,} ({self.cached:,} cached, {self.computed:,} computed)",
            f"tokens:    {self.tokens:,}",
            f"skipped:   {self.skipped:,}"
            + (f" (listed in {self.skipped_path})" if self.skipped_path else ""),
            f"seconds:   {self.seconds:,.1f} ({self.chunks_per_s:,.1f} chunks/s)",
            f"model:     {self.model} ({self.dim}-d)",
            f"output:    {self.output}",
        ]
        return out


def default_output(paths: list[Path], input_spec: str | Path) -> Path:
    spec = Path(str(input_spec))
    if len(paths) == 1 and spec.is_file():
        name = paths[0].name
        for suffix in (".gz", ".parquet", ".pq", ".jsonl", ".ndjson"):
            name = name.removesuffix(suffix)
        return paths[0].with_name(f"{name}.embeddings.parquet")
    base = spec if spec.is_dir() else paths[0].parent
    return base.parent / f"{base.name or 'corpus'}.embeddings.parquet"


def skipped_path_for(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".parquet") + ".skipped.jsonl")


def resolve_config(
    config: Config | str | Path | None, model: str | None, options: dict[str, Any]
) -> Config:
    """The effective config: the file (or defaults), then the given options on top."""
    cfg = config if isinstance(config, Config) else load(config)
    cfg = cfg.model_copy(deep=True)
    run_opts: dict[str, Any] = {}
    model_opts: dict[str, Any] = {"model": model}
    for key, value in options.items():
        key = _ALIASES.get(key, key)
        if key in RunConfig.model_fields:
            run_opts[key] = value
        elif key in OnnxConfig.model_fields:
            model_opts[key] = value
        else:
            raise ConfigError(f"unknown run option {key!r}")
    apply_overrides(cfg, "run", run_opts)
    apply_overrides(cfg, "model", model_opts)
    return cfg


def embed_corpus(
    input: str | Path,
    output: str | Path | None = None,
    *,
    config: Config | str | Path | None = None,
    model: str | None = None,
    quiet: bool = False,
    progress: str | None = None,
    **options: Any,
) -> RunSummary:
    """Embed every document of ``input`` into the Parquet file ``output``.

    ``options`` are ``[run]`` or ``[model]`` config keys (``batch_size``,
    ``max_tokens``, ``device``, ``threads``...), overriding ``config``.
    Skipped documents are counted in the summary and listed beside the output.
    """
    cfg = resolve_config(config, model, options)
    paths = discover_inputs(input)
    out = Path(output) if output is not None else default_output(paths, input)
    mode = progress or Progress.choose_mode(quiet)
    from embedgen.lock import acquire_output_lock
    from embedgen.providers.factory import build_provider

    with acquire_output_lock(out):
        _remove_stale_tmp(out)
        provider = build_provider(cfg)
        budget: Any = None
        status = "failed"
        try:
            from embedgen.budget.session import RunBudget

            budget = RunBudget.open(cfg, provider)
            cache = _open_cache(cfg.run)
            try:
                summary = _Run(cfg, budget.provider, paths, out, mode, cache).execute()
                status = "finished"
                summary.budget_lines = budget.lines()
                return summary
            except BudgetExceeded as exc:
                status = "stopped on budget"
                raise budget.explain(exc, paths, cache) from None
            finally:
                if cache is not None:
                    cache.close()
        finally:
            if budget is not None:
                budget.close(status)
            provider.close()


def _remove_stale_tmp(output: Path) -> None:
    """Temp files of killed runs on this output (we hold its lock, so none is alive)."""
    for stale in output.parent.glob(f".{output.name}.tmp-*"):
        try:
            stale.unlink()
        except OSError:
            log.warning(f"cannot remove stale temporary file {stale}")


def _open_cache(run: RunConfig) -> Any:
    if not run.use_cache:
        return None
    from embedgen.pipeline.cache import VectorCache, resolve_cache_dir

    return VectorCache.open(resolve_cache_dir(run.cache_dir))


@dataclass
class _Window:
    docs: DocBatch
    chunks: list[Chunk]
    doc_index: list[int]
    """Row in ``docs`` for each chunk."""
    skips: list[Skip]
    documents: int


@dataclass
class _Held:
    """A window looked up in the cache, waiting for its misses to be embedded."""

    window: _Window
    out: np.ndarray
    extras: dict[str, list[Any]]
    keys: list[bytes]
    todo: list[int]
    copies: list[tuple[int, int]]


MIN_MISSES = 256
"""Windows are held until this many chunks (at most half a sort window) need embedding, or
MAX_HELD_CHUNKS are held: a cold run never holds, a mostly cached one batches fully."""
MAX_HELD_CHUNKS = 16384


class _Run:
    def __init__(
        self,
        cfg: Config,
        provider: Provider,
        paths: list[Path],
        output: Path,
        mode: str,
        cache: Any = None,
    ) -> None:
        self.cfg = cfg
        self.cache = cache
        self._held: list[_Held] = []
        self._held_misses = 0
        self._held_chunks = 0
        self._puts: list[Future[Any]] = []
        self._put_pool: ThreadPoolExecutor | None = None
        self.run = cfg.run
        self.provider = provider
        self.info = provider.info
        self.paths = paths
        self.output = output
        self.mode = mode
        self.counters = Counters()
        self.skipped_path = skipped_path_for(output)
        self._skip_file: Any = None
        self.writer: OutputWriter | None = None
        tokenizer = provider.tokenizer()
        limit = self.info.max_tokens
        self.chunker = Chunker(
            tokenizer,
            max_tokens=min(self.run.max_tokens or limit, limit),
            overlap=self.run.overlap,
        )
        self.overhead = tokenizer.overhead
        from embedgen.pipeline.cache import fingerprint_id

        self.fp_id = fingerprint_id(self.info.fingerprint)
        mixed = self.run.allow_mixed_models and len(self.run.providers) > 1
        self.extra_columns = (["sparse"] if self.run.sparse else []) + (["model"] if mixed else [])
        # Cached rows carry a dense vector only: sparse runs recompute (and still store) every
        # chunk; runs that may mix models keep the cache out of it, so no row is misattributed.
        self.read_cache = cache is not None and not self.run.sparse and not mixed
        self.write_cache = cache is not None and not mixed
        if mixed and cache is not None:
            log.warning("allow_mixed_models: the vector cache is not used for this run")
        if cache is not None:
            cache.register_model(
                self.fp_id, self.info.fingerprint, self.info.model, self.info.dim, self.run.dtype
            )
            self._put_pool = ThreadPoolExecutor(1, thread_name_prefix="embedgen-cache")
        self.read_opts = ReadOptions(
            text_column=self.run.text_column,
            id_column=self.run.id_column,
            keep=tuple(self.run.keep),
            on_error=self.run.on_error,
            batch_rows=self.run.sort_window,
        )

    # -- producer -------------------------------------------------------------------

    def _windows(self) -> Iterator[_Window]:
        limit = self.run.limit
        seen = 0
        for docs in read_documents(self.paths, self.read_opts):
            if limit is not None and seen >= limit:
                return
            if limit is not None and seen + len(docs.texts) > limit:
                keep_n = limit - seen
                docs.ids, docs.texts = docs.ids[:keep_n], docs.texts[:keep_n]
                docs.row_numbers = docs.row_numbers[:keep_n]
                docs.keep = docs.keep.slice(0, keep_n) if docs.keep is not None else None
            seen += len(docs.texts)
            skips = list(docs.skips)
            already = {s.row for s in docs.skips}
            valid: list[int] = []
            for i, text in enumerate(docs.texts):
                if text is None:
                    if docs.row_numbers[i] not in already:
                        skips.append(docs.skip(i, "null text"))
                elif not text.strip():
                    skips.append(docs.skip(i, "empty text"))
                else:
                    valid.append(i)
            per_doc = self.chunker.chunk([docs.texts[i] for i in valid])  # type: ignore[misc]
            chunks: list[Chunk] = []
            doc_index: list[int] = []
            for i, doc_chunks in zip(valid, per_doc):
                if not doc_chunks:
                    skips.append(docs.skip(i, "text has no tokens"))
                chunks.extend(doc_chunks)
                doc_index.extend([i] * len(doc_chunks))
            yield _Window(docs, chunks, doc_index, skips, len(docs.texts) + len(docs.skips))

    def _produce(self, q: queue.Queue[Any], stop: threading.Event) -> None:
        try:
            for window in self._windows():
                while not stop.is_set():
                    try:
                        q.put(window, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    # -- consumer -------------------------------------------------------------------

    def execute(self) -> RunSummary:
        started = time.perf_counter()
        total = count_rows(self.paths)
        if self.run.limit is not None and total is not None:
            total = min(total, self.run.limit)
        progress = Progress(total, mode=self.mode)
        q: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(q, stop), daemon=True, name="embedgen-reader"
        )
        producer.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                self._process(item)
                progress.update(self.counters)
            self._flush()
            if self.writer is None:
                self._open_writer(None)
            assert self.writer is not None
            self.writer.finish()
        except BaseException as exc:
            stop.set()
            kept = self.writer.abort() if self.writer is not None else None
            if kept is not None and isinstance(exc, EmbedgenError):
                exc.args = (f"{exc.args[0]} (rows written so far are in {kept})",)
            raise
        finally:
            stop.set()
            progress.close()
            if self._skip_file is not None:
                self._skip_file.close()
            if self._put_pool is not None:
                self._put_pool.shutdown(wait=True)
        c = self.counters
        if self.cache is not None:
            self.cache.record_run(c.cached, c.computed, self.fp_id)
        summary = RunSummary(
            output=self.output,
            documents=c.documents,
            chunks=c.chunks,
            tokens=c.tokens,
            skipped=c.skipped,
            cached=c.cached,
            computed=c.computed,
            seconds=time.perf_counter() - started,
            skipped_path=self.skipped_path if c.skipped else None,
            model=self.info.model,
            dim=self.info.dim,
            provider_stats=_provider_stats(self.provider),
            mixed_models="model" in self.extra_columns,
        )
        if not c.skipped and self.skipped_path.exists():
            self.skipped_path.unlink()
        return summary

    def _record_skips(self, skips: list[Skip]) -> None:
        if not skips:
            return
        if self._skip_file is None:
            self.skipped_path.parent.mkdir(parents=True, exist_ok=True)
            self._skip_file = self.skipped_path.open("w", encoding="utf-8")
        for s in skips:
            self._skip_file.write(s.to_json() + "\n")
        self._skip_file.flush()
        self.counters.skipped += len(skips)

    def _process(self, w: _Window) -> None:
        """Look a window up in the cache; embed and write held windows once enough misses."""
        self._record_skips(w.skips)
        if self.writer is None:
            self._open_writer(w)
        held = self._lookup(w)
        self._held.append(held)
        self._held_misses += len(held.todo)
        self._held_chunks += len(w.chunks)
        enough = min(MIN_MISSES, max(1, self.run.sort_window // 2))
        if self._held_misses >= enough or self._held_chunks >= MAX_HELD_CHUNKS:
            self._flush()

    def _lookup(self, w: _Window) -> _Held:
        """Cache hits of a window's chunks, and each distinct miss (the rest copy it)."""
        from embedgen.pipeline.cache import cache_keys

        chunks = w.chunks
        out = np.empty((len(chunks), self.info.dim), dtype=np.float32)
        extras: dict[str, list[Any]] = {name: [None] * len(chunks) for name in self.extra_columns}
        held = _Held(w, out, extras, [], [], [])
        if not chunks:
            return held
        held.keys = cache_keys(self.fp_id, [c.text for c in chunks])
        hits = self.cache.get_many(self.fp_id, held.keys) if self.read_cache else None
        first: dict[bytes, int] = {}
        for i, key in enumerate(held.keys):
            if hits is not None and hits[i] is not None:
                out[i] = hits[i]
                self.counters.cached += 1
            elif key in first:
                held.copies.append((i, first[key]))
            else:
                first[key] = i
                held.todo.append(i)
        self.counters.cached += len(held.copies)
        return held

    def _flush(self) -> None:
        """Embed the misses of every held window together, then write them in order.

        Holding windows that are mostly cached lets an incremental run batch its few misses
        as fully as a cold run does.
        """
        held, self._held = self._held, []
        self._held_misses = self._held_chunks = 0
        if not held:
            return
        chunks = [c for h in held for c in h.window.chunks]
        keys = [k for h in held for k in h.keys]
        starts = np.cumsum([0] + [len(h.window.chunks) for h in held]).tolist()
        todo = [start + i for h, start in zip(held, starts) for i in h.todo]
        out = np.concatenate([h.out for h in held]) if len(held) > 1 else held[0].out
        extras = {n: [v for h in held for v in h.extras[n]] for n in self.extra_columns}
        if todo:
            self._compute(chunks, keys, todo, out, extras)
        self._wait_puts()
        for h, start in zip(held, starts):
            end = start + len(h.window.chunks)
            vectors = out[start:end]
            window_extras = {n: values[start:end] for n, values in extras.items()}
            for i, j in h.copies:
                vectors[i] = vectors[j]
                for values in window_extras.values():
                    values[i] = values[j]
            self._write(h.window, vectors, window_extras)
            c = self.counters
            c.documents += h.window.documents
            c.chunks += len(h.window.chunks)
            c.tokens += sum(ch.tokens for ch in h.window.chunks)

    def _compute(
        self,
        chunks: list[Chunk],
        keys: list[bytes],
        todo: list[int],
        out: np.ndarray,
        extras: dict[str, list[Any]],
    ) -> None:
        lengths = [len(chunks[i].input_ids or ()) or chunks[i].tokens + self.overhead for i in todo]
        plan = plan_batches(
            lengths,
            max_items=self.info.max_batch_inputs,
            max_tokens=self.info.max_batch_tokens,
            padded=self.info.kind == "onnx",
        )
        batches = [[todo[j] for j in idx] for idx in plan]
        for rows, result in self._results(chunks, batches):
            vecs = _checked(result.vectors, len(rows), self.info.dim, self.info.name)
            out[rows] = vecs
            for name, values in ((n, getattr(result, _RESULT_FIELD[n])) for n in extras):
                if values is None or len(values) != len(rows):
                    raise ProviderError(f"{self.info.name} returned no {name} for a batch")
                for i, value in zip(rows, values):
                    extras[name][i] = value
            self.counters.computed += len(rows)
            if self.write_cache and self._put_pool is not None:
                # at most two batches computed but not yet committed: that is all a kill loses
                while len(self._puts) >= 2:
                    self._puts.pop(0).result()
                self._puts.append(
                    self._put_pool.submit(
                        self.cache.put_many, self.fp_id, [keys[i] for i in rows], vecs
                    )
                )

    def _results(
        self, chunks: list[Chunk], batches: list[list[int]]
    ) -> Iterator[tuple[list[int], EmbedResult]]:
        """Embedded batches, in order; up to ``max_concurrency`` requests in flight."""

        def one(rows: list[int]) -> EmbedResult:
            first = chunks[rows[0]]
            batch = Batch(
                texts=[chunks[i].text for i in rows],
                token_counts=[chunks[i].tokens + self.overhead for i in rows],
                input_ids=[chunks[i].input_ids for i in rows]  # type: ignore[misc]
                if first.input_ids is not None
                else None,
            )
            return self.provider.embed_batch(batch)

        workers = max(1, self.info.max_concurrency)
        if workers == 1 or len(batches) == 1:
            for rows in batches:
                yield rows, one(rows)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="embedgen-req") as pool:
            futures = [(rows, pool.submit(one, rows)) for rows in batches]
            try:
                failure: EmbedgenError | None = None
                for rows, fut in futures:
                    if failure is not None and fut.cancel():
                        continue
                    try:
                        result = fut.result()
                    except EmbedgenError as exc:
                        # batches already sent are paid for: let them reach the cache first
                        failure = failure or exc
                        continue
                    yield rows, result
                if failure is not None:
                    raise failure
            finally:
                for _, fut in futures:
                    fut.cancel()

    def _wait_puts(self) -> None:
        """Every computed batch is committed to the cache before its rows are written."""
        puts, self._puts = self._puts, []
        for fut in puts:
            fut.result()

    def _open_writer(self, w: _Window | None) -> None:
        import pyarrow as pa

        id_type: Any = pa.int64()
        keep_schema = None
        if w is not None and w.docs.ids:
            if self.run.id_column:
                id_type = pa.array(w.docs.ids).type
            keep_schema = w.docs.keep.schema if w.docs.keep is not None else None
        info = self.info
        meta = {
            "model": info.model,
            "provider": info.name,
            "kind": info.kind,
            "fingerprint": info.fingerprint,
            "dim": str(info.dim),
            "dtype": self.run.dtype,
            "max_tokens": str(self.chunker.window + self.overhead),
            "overlap": str(self.run.overlap),
            "version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        meta.update({k: v for k, v in info.details.items() if k not in meta})
        self.writer = OutputWriter(
            self.output,
            dim=info.dim,
            dtype=self.run.dtype,
            with_text=not self.run.no_text,
            id_type=id_type,
            keep_schema=keep_schema,
            with_model="model" in self.extra_columns,
            with_sparse="sparse" in self.extra_columns,
            metadata=meta,
        )

    def _write(self, w: _Window, vectors: np.ndarray, extras: dict[str, list[Any]]) -> None:
        import pyarrow as pa

        assert self.writer is not None
        ch = w.chunks
        idx = w.doc_index
        ids = [w.docs.ids[i] for i in idx]
        try:
            id_arr = pa.array(ids, type=self.writer.schema.field("id").type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise EmbedgenError(
                f"id column {self.run.id_column!r} has values of mixed types "
                f"(expected {self.writer.schema.field('id').type})"
            ) from None
        columns: dict[str, Any] = {
            "id": id_arr,
            "chunk": pa.array([c.index for c in ch], type=pa.int32()),
            "char_start": pa.array([c.char_start for c in ch], type=pa.int32()),
            "char_end": pa.array([c.char_end for c in ch], type=pa.int32()),
            "tokens": pa.array([c.tokens for c in ch], type=pa.int32()),
        }
        if not self.run.no_text:
            columns["text"] = pa.array([c.text for c in ch], type=pa.string())
        if "sparse" in extras:
            columns["sparse"] = pa.array(
                [sorted(d.items()) for d in extras["sparse"]],
                type=pa.map_(pa.int32(), pa.float32()),
            )
        if "model" in extras:
            columns["model"] = pa.array(extras["model"], type=pa.string())
        keep = w.docs.keep.take(pa.array(idx, type=pa.int64())) if w.docs.keep is not None else None
        self.writer.write(columns, vectors, keep)


def _provider_stats(provider: Provider) -> dict[str, Any]:
    members = getattr(provider, "members", [provider])
    return {m.info.name: m.stats() for m in members if callable(getattr(m, "stats", None))}


def _checked(vectors: Any, n: int, dim: int, name: str) -> np.ndarray:
    """Refuse a malformed result: wrong count or dimension, NaN or infinity."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.shape != (n, dim):
        raise ProviderError(f"{name} returned shape {arr.shape}, expected ({n}, {dim})")
    if not np.isfinite(arr).all():
        raise ProviderError(f"{name} returned non-finite values (NaN or infinity)")
    return arr
