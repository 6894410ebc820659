"""One embedding run on the local engine: the stages of the pipeline, composed.

::

    read -> chunk (windows.py) -> look up (lookup.py) -> embed the misses (embed.py)
         -> store (store.py) -> write rows in input order (write.py)

Reading and chunking run in a producer thread, one document batch ahead, while the
main thread looks up, embeds, stores and writes. Mostly cached windows are held until
enough misses accumulate, so an incremental run batches its few misses as fully as a
cold run. :func:`run_local` opens what a run holds (output lock, router, budget, cache)
and closes it, whatever happens; :func:`embedgen.embed_corpus` resolves a run and picks
the engine.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.batch.pack import Item
from embedgen.config import RunConfig
from embedgen.errors import BudgetExceeded, note_kept
from embedgen.pipeline.lookup import Held, Lookup, distinct
from embedgen.pipeline.progress import Counters, Progress
from embedgen.pipeline.read import Skip, count_rows
from embedgen.pipeline.spec import RunSpec, extra_columns
from embedgen.pipeline.store import Store
from embedgen.pipeline.summary import RunSummary
from embedgen.pipeline.windows import Window, Windows, make_chunker, read_options
from embedgen.pipeline.write import OutputWriter, QueuedWrites, open_writer, window_columns
from embedgen.router import Router

log = logging.getLogger("embedgen")


def run_local(spec: RunSpec, mode: str) -> RunSummary:
    """Run ``spec`` in this process, holding the output lock."""
    from embedgen.pipeline.run_budget import RunBudget
    from embedgen.router.build import build_members
    from embedgen.util.locks import acquire_output_lock

    cfg, out, paths = spec.cfg, spec.output, list(spec.paths)
    with acquire_output_lock(out):
        remove_stale_tmp(out)
        members = build_members(cfg)
        budget: RunBudget | None = None
        status = "failed"
        try:
            budget = RunBudget.open(cfg, [m.info for m in members])
            router = Router(
                members, allow_mixed_models=cfg.run.allow_mixed_models, spend=budget.budget
            )
            cache = open_cache(cfg.run)
            try:
                from embedgen.batch.prepass import batch_prepass

                run = LocalRun(spec, router, mode, cache)
                batches = batch_prepass(cfg, cache, run.misses, fingerprint=router.info.fingerprint,
                                        wait=cfg.run.batch_wait, output=out)  # fmt: skip
                summary = run.execute()
                status = "finished"
                summary.budget_lines = budget.lines() + (batches.lines() if batches else [])
                return summary
            except BudgetExceeded as exc:
                status = "stopped on budget"
                raise budget.explain(exc, paths, cache, router) from None
            finally:
                if cache is not None:
                    cache.close()
        finally:
            if budget is not None:
                budget.close(status)
            for m in members:
                m.close()


def remove_stale_tmp(output: Path) -> None:
    """Temp files of killed runs on this output (we hold its lock, so none is alive)."""
    for stale in output.parent.glob(f".{output.name}.tmp-*"):
        try:
            stale.unlink()
        except OSError:
            log.warning(f"cannot remove stale temporary file {stale}")


def open_cache(run: RunConfig) -> Any:
    if not run.use_cache:
        return None
    from embedgen.cache import VectorCache, resolve_cache_dir

    return VectorCache.open(resolve_cache_dir(run.cache_dir))


MIN_MISSES = 256
"""Windows are held until this many chunks (at most half a sort window) need embedding, or
MAX_HELD_CHUNKS are held: a cold run never holds, a mostly cached one batches fully."""
MAX_HELD_CHUNKS = 16384

LOADING_HOLD = 4
"""While the model still loads, mostly cached windows are held until this many times
MIN_MISSES (a cold run's windows are written one by one, as soon as they can be)."""


class LocalRun:
    """The stages of one run, composed in this process."""

    def __init__(self, spec: RunSpec, router: Router, mode: str, cache: Any = None) -> None:
        from embedgen.cache import fingerprint_id

        self.spec = spec
        self.run = run = spec.cfg.run
        self.router = router
        self.info = info = router.info
        self.mode = mode
        self.cache = cache
        self.counters = Counters()
        self.columns = extra_columns(run)
        mixed = "model" in self.columns
        if mixed and cache is not None:
            log.warning("allow_mixed_models: the vector cache is not used for this run")
        tokenizer = router.tokenizer()
        self.chunker = make_chunker(tokenizer, info, run)
        self.overhead = tokenizer.overhead
        self.fp_id = fingerprint_id(info.fingerprint)
        index = None
        heads = run.sparse or run.colbert
        if cache is not None and not heads and not mixed:
            from embedgen.pipeline.docindex import DocIndex

            index = DocIndex(cache, self.fp_id, self.chunker)
        self.index = index
        self.windows = Windows(self.chunker, read_options(run), run.limit, index)
        # Cached rows carry a dense vector only: sparse runs recompute (and still store) every
        # chunk; runs that may mix models keep the cache out of it, so no row is misattributed.
        self.lookup = Lookup(
            cache, self.fp_id, dim=info.dim, read=not heads and not mixed,
            extra_columns=self.columns,
        )  # fmt: skip
        if cache is not None:
            cache.register_model(self.fp_id, info.fingerprint, info.model, info.dim, run.dtype,
                                 normalized=info.unit_vectors)  # fmt: skip
        self.store = Store(cache, self.fp_id, enabled=not mixed)
        from embedgen.pipeline.embed import Embedder

        self.embedder = Embedder(router, self.columns)
        self.skipped_path = spec.skipped_path
        self._skip_file: Any = None
        self.writer: OutputWriter | None = None
        self._held: list[Held] = []
        self._held_misses = 0
        self._writes = QueuedWrites(self._write)
        self._held_chunks = 0

    def misses(self) -> Iterator[Item]:
        """Every chunk of the corpus not in the cache, once per window (batch mode's scan)."""
        for w in self.windows(list(self.spec.paths)):
            held = self.lookup(w, Counters())
            for i in held.todo:
                yield Item(held.keys[i], w.chunks[i].text, w.chunks[i].tokens + self.overhead)

    # -- producer -------------------------------------------------------------------

    def _produce(self, q: queue.Queue[Any], stop: threading.Event) -> None:
        try:
            for window in self.windows(list(self.spec.paths)):
                if window.new_docs or self.index is None:
                    self.router.prepare()  # new documents: their chunks are likely misses
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

    def _windows(self, stop: threading.Event) -> Iterator[Window]:
        q: queue.Queue[Any] = queue.Queue(maxsize=2)
        producer = threading.Thread(
            target=self._produce, args=(q, stop), daemon=True, name="embedgen-reader"
        )
        producer.start()
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- consumer -------------------------------------------------------------------

    def execute(self) -> RunSummary:
        started = time.perf_counter()
        paths = list(self.spec.paths)
        total = count_rows(paths)
        if self.run.limit is not None and total is not None:
            total = min(total, self.run.limit)
        progress = Progress(total, mode=self.mode)
        stop = threading.Event()
        try:
            for window in self._windows(stop):
                self._process(window)
                progress.update(self.counters)
            self._flush()
            self._writes.drain()
            if self.writer is None:
                self._open_writer(None)
            assert self.writer is not None
            self.writer.finish()
        except BaseException as exc:
            stop.set()
            self._writes.drain(check=False)
            kept = self.writer.abort() if self.writer is not None else None
            self.store.close()
            note_kept(exc, self._kept(kept))
            raise
        finally:
            stop.set()
            progress.close()
            if self._skip_file is not None:
                self._skip_file.close()
            self.store.close()
        return self._summary(time.perf_counter() - started)

    def _kept(self, partial: Path | None) -> str:
        """What a failed run kept, and how to go on from it."""
        done = self.store.committed
        where = f"{done:,} embedded chunks are in the cache at {self.cache.path}" if done else ""
        if partial is not None:
            note = f"rows written so far are in {partial}"
            return note + (f"; {where}" if where else "")
        if where:
            return f"no rows were written yet; {where}: re-run the same command to go on"
        return "nothing was embedded yet"

    def _summary(self, seconds: float) -> RunSummary:
        c = self.counters
        if self.cache is not None:
            self.cache.record_run(c.cached, c.computed, self.fp_id)
        if not c.skipped and self.skipped_path.exists():
            self.skipped_path.unlink()
        summary = RunSummary.of(
            c,
            output=self.spec.output,
            skipped_path=self.skipped_path,
            info=self.info,
            seconds=seconds,
            provider_stats=dict(self.router.stats()),
            mixed_models="model" in self.columns,
        )
        summary.damaged = self.lookup.damaged()
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

    def _process(self, w: Window) -> None:
        """Look a window up in the cache; embed and write held windows once enough misses."""
        self._record_skips(w.skips)
        if self.writer is None:
            self._open_writer(w)
        held = self.lookup(w, self.counters)
        if held.todo:
            self.router.prepare()
        self._held.append(held)
        self._held_misses += len(held.todo)
        self._held_chunks += len(w.chunks)
        enough = min(MIN_MISSES, max(1, self.run.sort_window // 2))
        mostly_cached = self._held_misses * 2 < self._held_chunks
        if mostly_cached and self._held_misses >= enough and not self.router.ready():
            # while the model loads, looking up a few more windows beats waiting for it
            enough *= LOADING_HOLD
        if self._held_misses >= enough or self._held_chunks >= MAX_HELD_CHUNKS:
            self._flush()

    def _flush(self) -> None:
        """Embed the misses of every held window together, then write them in order."""
        held, self._held = self._held, []
        self._held_misses = self._held_chunks = 0
        if not held:
            return
        chunks = [c for h in held for c in h.window.chunks]
        keys = [k for h in held for k in h.keys]
        starts = np.cumsum([0] + [len(h.window.chunks) for h in held]).tolist()
        todo, repeats = distinct(
            [start + i for h, start in zip(held, starts) for i in h.todo], keys
        )
        out = np.concatenate([h.out for h in held]) if len(held) > 1 else held[0].out
        extras = {n: [v for h in held for v in h.extras[n]] for n in self.columns}
        for done in self.embedder.embed(chunks, todo):
            out[done.rows] = done.vectors
            for name, values in done.extras.items():
                for i, value in zip(done.rows, values):
                    extras[name][i] = value
            self.counters.computed += len(done.rows)
            self.store.put([keys[i] for i in done.rows], done.vectors)
        self.store.wait()
        self.counters.cached += len(repeats)  # a text missing from two held windows: once
        # repeats first: a window's first copy of a text may itself repeat an earlier window's
        copies = repeats + [(s + i, s + j) for h, s in zip(held, starts) for i, j in h.copies]
        for i, j in copies:
            out[i] = out[j]
            for values in extras.values():
                values[i] = values[j]
        for h, start in zip(held, starts):
            end = start + len(h.window.chunks)
            window_extras = {n: values[start:end] for n, values in extras.items()}
            # written on the writer thread while the next misses embed
            self._writes.submit(h.window, out[start:end], window_extras)
            if self.index is not None and h.window.new_docs:
                self.index.put(h.window.new_docs)  # after its vectors are committed
            c = self.counters
            c.documents += h.window.documents
            c.chunks += len(h.window.chunks)
            c.tokens += sum(ch.tokens for ch in h.window.chunks)

    def _open_writer(self, w: Window | None) -> None:
        self.writer = open_writer(
            self.spec.output,
            w.docs if w is not None else None,
            info=self.info,
            run=self.run,
            max_tokens=self.chunker.window + self.overhead,
            extra_columns=self.columns,
        )

    def _write(self, w: Window, vectors: np.ndarray, extras: dict[str, list[Any]]) -> None:
        assert self.writer is not None
        columns, keep = window_columns(
            w, self.writer.schema, id_column=self.run.id_column, with_text=not self.run.no_text,
            extras=extras,
        )  # fmt: skip
        self.writer.write(columns, vectors, keep)
