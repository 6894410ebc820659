"""One embedding run on the local engine: the stages of the pipeline, composed.

::

    read -> chunk (windows.py) -> look up (lookup.py) -> embed (embed.py)
         -> store (store.py) -> write (write.py)

Stages 3-5 are the run core (``core.Stages``), the writer and the report ``ends.RunEnds``:
the Ray engine uses the same two.

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
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedgen.batch.pack import Item
from embedgen.config import RunConfig
from embedgen.errors import BudgetExceeded
from embedgen.pipeline.core import Stages
from embedgen.pipeline.ends import RunEnds
from embedgen.pipeline.lookup import Held
from embedgen.pipeline.progress import Counters
from embedgen.pipeline.sink_write import SinkRun, open_sink_run
from embedgen.pipeline.spec import RunSpec
from embedgen.pipeline.summary import RunSummary
from embedgen.pipeline.windows import Window, Windows, make_chunker, read_options
from embedgen.pipeline.write import QueuedWrites, window_columns
from embedgen.router import Router

if TYPE_CHECKING:
    from embedgen.batch.runner import BatchSummary

log = logging.getLogger("embedgen")


def run_local(spec: RunSpec, mode: str) -> RunSummary:
    """Run ``spec`` in this process, holding the output lock."""
    from embedgen.pipeline.run_budget import RunBudget
    from embedgen.pipeline.up_to_date import run_stamp
    from embedgen.router.build import build_members
    from embedgen.util.locks import acquire_output_lock

    cfg, out, paths = spec.cfg, spec.output, list(spec.paths)
    with acquire_output_lock(out):
        if spec.sink is None:
            remove_stale_tmp(out)
        members = build_members(cfg)
        budget: RunBudget | None = None
        status = "failed"
        try:
            budget = RunBudget.open(cfg, [m.info for m in members])
            router = Router(
                members, allow_mixed_models=cfg.run.allow_mixed_models, spend=budget.budget
            )
            if not cfg.run.use_cache:
                router.prepare()  # every chunk will be embedded: load the model while setting up
            cache = open_cache(cfg.run)
            sink: SinkRun | None = None
            try:
                stamp = run_stamp(spec, router.info.fingerprint)
                done = up_to_date(spec, stamp, router.info, cache)
                if done is not None:
                    status = "finished"
                    return done
                sink = open_sink_run(spec, router.info)  # checked before anything is embedded
                run = LocalRun(spec, router, mode, cache, sink, stamp=stamp)
                if not run.stages.lookup.read:
                    router.prepare()  # nothing is read from the cache: all will be embedded
                batches = batch_prepass_of(run)
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
                if sink is not None:
                    sink.close()  # the writer closes it too; here for a failure before it
        finally:
            if budget is not None:
                budget.close(status)
            for m in members:
                m.close()


def up_to_date(spec: RunSpec, stamp: str | None, info: Any, cache: Any) -> RunSummary | None:
    """The summary of a run with nothing to do (the output holds its rows), else None."""
    from embedgen.cache import fingerprint_id
    from embedgen.pipeline.up_to_date import finished_counts

    counts = finished_counts(spec, stamp)
    if counts is None:
        return None
    reused = counts["cached"] + counts["computed"]
    if cache is not None:  # the model was used: `cache prune --unused-since` keeps it
        cache.record_run(reused, 0, fingerprint_id(info.fingerprint))
    summary = RunSummary(
        spec.output, documents=counts["documents"], chunks=counts["chunks"],
        tokens=counts["tokens"], skipped=counts["skipped"], cached=reused,
        duplicate=counts["duplicate"], model=info.model, dim=info.dim,
        skipped_path=spec.skipped_path if counts["skipped"] else None, up_to_date=True,
    )  # fmt: skip
    return summary  # its lines say "up to date" (and the log file has them)


def batch_prepass_of(run: LocalRun) -> BatchSummary | None:
    """With ``mode = "batch"``: the run's misses collected through the batch API into the
    cache first (at the batch price), before any engine embeds; None otherwise."""
    from embedgen.batch.prepass import batch_prepass

    cfg = run.spec.cfg
    return batch_prepass(cfg, run.cache, run.misses, fingerprint=run.info.fingerprint,
                         wait=cfg.run.batch_wait, output=run.spec.output)  # fmt: skip


def read_ahead(
    windows: Iterator[Window], stop: threading.Event, on_read: Callable[[Window], None]
) -> Generator[Window, None, None]:
    """``windows``, read and chunked in a producer thread, one batch ahead of the consumer.

    ``on_read`` runs on the reader thread for each window (to start loading a model); an
    error of the reader is raised in the consumer; ``stop`` ends the reader early. Closing
    this generator (or its end) stops the reader and waits for it: a reader still inside
    Arrow or the tokenizer while the interpreter exits can abort the process (SIGABRT on
    Ctrl-C), and one still reading the cache's document index would outlive the cache.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=2)

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for window in windows:
                on_read(window)
                if not offer(window):
                    return
            offer(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(exc)

    reader = threading.Thread(target=produce, daemon=True, name="embedgen-reader")
    reader.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


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
MAX_HELD_CHUNKS are held: a cold run never holds, a mostly cached one batches fully, and
windows with nothing to embed are written at once (held, a fully cached stretch of a large
corpus kept 16,384 chunks beside the loaded model: +81 MB at 1,000,000 rows)."""
MAX_HELD_CHUNKS = 16384

LOADING_HOLD = 4
"""While the model still loads, mostly cached windows are held until this many times
MIN_MISSES (a cold run's windows are written one by one, as soon as they can be)."""


class LocalRun:
    """The stages of one run, composed in this process."""

    def __init__(
        self, spec: RunSpec, router: Router, mode: str, cache: Any = None,
        sink: SinkRun | None = None, stamp: str | None = None,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.run = run = spec.cfg.run
        self.router = router
        self.info = info = router.info
        self.mode = mode
        self.cache = cache
        self.counters = Counters()
        tokenizer = router.tokenizer()
        self.chunker = make_chunker(tokenizer, info, run)
        self.overhead = tokenizer.overhead
        self.stages = Stages.build(run, router, cache)
        self.columns = self.stages.columns
        self.index = self.stages.doc_index(run, self.chunker)
        self.sink = sink
        sieve = sink.sieve_for(self.stages.fp_id, self.chunker) if sink is not None else None
        self.windows = Windows(self.chunker, read_options(run), run.limit, self.index, sieve)
        self.ends: RunEnds | None = None
        self.stamp = stamp
        """What decides the rows, stamped on the finished output (:mod:`.up_to_date`)."""
        self._held: list[tuple[Window, Held]] = []
        self._held_misses = 0
        self._writes = QueuedWrites(self._write)
        self._held_chunks = 0

    def misses(self) -> Iterator[Item]:
        """Every chunk of the corpus not in the cache, once per window (batch mode's scan)."""
        for w in self.windows(list(self.spec.paths)):
            held = self.stages.lookup(w.chunks, Counters())
            for i in held.todo:
                yield Item(held.keys[i], w.chunks[i].text, w.chunks[i].tokens + self.overhead)

    def _read(self, w: Window) -> None:
        """On the reader thread, as a window is read: new documents are likely misses."""
        if w.new_docs or self.index is None:
            self.router.prepare()

    # -- consumer -------------------------------------------------------------------

    def execute(self) -> RunSummary:
        self.ends = ends = RunEnds(
            self.spec, self.info, mode=self.mode, columns=self.columns,
            max_tokens=self.chunker.window + self.overhead, sink=self.sink, stamp=self.stamp,
        )  # fmt: skip
        self.counters = ends.counters
        stop = threading.Event()
        reader = read_ahead(self.windows(list(self.spec.paths)), stop, self._read)
        try:
            for window in reader:
                self._process(window)
            self._flush()
            self._writes.drain()
            ends.finish()
        except BaseException as exc:
            reader.close()  # the reader stops and is joined before anything is closed
            self._writes.drain(check=False)
            self.stages.close()
            ends.failed(exc, committed=self.stages.store.committed, cache=self.cache)
            raise
        finally:
            reader.close()
            ends.close()
            self.stages.close()
        summary = ends.summary(
            cache=self.cache, fp_id=self.stages.fp_id, provider_stats=dict(self.router.stats()),
            seconds=time.perf_counter() - ends.started,
        )  # fmt: skip
        summary.damaged = self.stages.lookup.damaged()
        return summary

    def _process(self, w: Window) -> None:
        """Look a window up in the cache; embed and write held windows once enough misses."""
        assert self.ends is not None
        self.ends.skips([s.to_json() for s in w.skips])
        if not self.ends.opened:
            self.ends.open_for(w.docs)
        held = self.stages.lookup(w.chunks, self.counters)
        if held.todo:
            self.router.prepare()
        self._held.append((w, held))
        self._held_misses += len(held.todo)
        self._held_chunks += len(w.chunks)
        enough = min(MIN_MISSES, max(1, self.run.sort_window // 2))
        mostly_cached = self._held_misses * 2 < self._held_chunks
        if mostly_cached and self._held_misses >= enough and not self.router.ready():
            # while the model loads, looking up a few more windows beats waiting for it
            enough *= LOADING_HOLD
        if (
            self._held_misses >= enough
            or self._held_chunks >= MAX_HELD_CHUNKS
            or not self._held_misses  # nothing to batch: holding would only cost memory
        ):
            self._flush()
        else:
            self.ends.progress.update(self.counters)

    def _flush(self) -> None:
        """Embed the misses of every held window together, then write them in order."""
        held, self._held = self._held, []
        self._held_misses = self._held_chunks = 0
        if not held:
            return
        assert self.ends is not None
        filled = self.stages.fill([h for _, h in held], self.counters)
        for k, (w, _) in enumerate(held):
            vectors, extras = filled.part(k)
            # written on the writer thread while the next misses embed
            self._writes.submit(w, vectors, extras)
            if self.index is not None and w.new_docs:
                self.index.put(w.new_docs)  # after its vectors are committed
            tokens = sum(ch.tokens for ch in w.chunks)
            self.ends.counted(w.documents, len(w.chunks), tokens, w.tokenized)

    def _write(self, w: Window, vectors: np.ndarray, extras: dict[str, list[Any]]) -> None:
        assert self.ends is not None
        if self.ends.into is not None:
            return self.ends.into.write_window(w, vectors, extras)
        writer = self.ends.writer
        assert writer is not None
        columns, keep = window_columns(
            w, writer.schema, id_column=self.run.id_column, with_text=not self.run.no_text,
            extras=extras,
        )  # fmt: skip
        writer.write(columns, vectors, keep)
