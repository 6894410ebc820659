"""Counting what a corpus would cost: the engine of ``embedgen cost-estimate``.

The corpus is streamed once. Each document window is chunked exactly as ``run``
chunks it, once per distinct tokenizer and chunk size, and every chunk is keyed as
``run`` keys it, so a chunk already in the vector cache (or seen earlier in the corpus,
which ``run`` embeds once) costs nothing. What is left is batched under the provider's
request limits as ``run`` batches it, giving requests; tokens times the price gives the
cost. Local models are timed on a short warm-up over the corpus's own first chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.budget.prices import cost_pico, fmt_usd, usd

if TYPE_CHECKING:
    from embedgen.config import Config
    from embedgen.pipeline.chunk import Chunk
    from embedgen.pipeline.targets import Target

ASSUMED_LATENCY_S = 1.0
"""Seconds per API request when no rate limit is configured (a documented assumption)."""
WARMUP_CHUNKS = 256


@dataclass
class Tally:
    """Counts for one provider over the chunks read so far."""

    chunks: int = 0
    cached: int = 0
    """Chunks already in the cache."""
    duplicate: int = 0
    """Repeats of a chunk text earlier in the corpus (embedded once, not paid twice)."""
    tokens_all: int = 0
    tokens: int = 0
    """Tokens of the chunks to embed (what is billed)."""
    requests: int = 0
    warm_seconds: float = 0.0
    warm_tokens: int = 0
    seen: set[int] = field(default_factory=set)


@dataclass
class Counted:
    documents: int = 0
    skipped: int = 0
    unchanged: int = 0
    """Documents the sink holds unchanged (``-o SINK``): not chunked, looked up or paid."""
    tallies: dict[str, Tally] = field(default_factory=dict)


def count(
    paths: list[Path], targets: list[Target], cfg: Config, *, cache: Any = None,
    limit: int | None = None, shared: bool = False, sieve: Sieve | None = None,
) -> Counted:  # fmt: skip
    """Stream the corpus (first ``limit`` documents) and count chunks, tokens and requests.

    ``shared``: the targets are the model slots of one run, chunked together as ``run``
    chunks them (one cut that fits every slot); otherwise each provider is chunked alone.
    ``sieve``: a sink's (:meth:`~embedgen.pipeline.sink_write.SinkRun.sieve`): the
    documents it holds unchanged are taken out first, as ``run`` takes them out.
    """
    from embedgen.cache import cache_keys, fingerprint_id
    from embedgen.pipeline.batch import plan_batches

    fps = {t.name: fingerprint_id(t.info.fingerprint) for t in targets}
    out = Counted(tallies={t.name: Tally() for t in targets})
    cross_window = cfg.run.use_cache  # without the cache, run dedupes within a window only
    chunked = _chunked_shared(targets, cfg.run.overlap) if shared else _chunked_alone(targets)
    for texts, skipped, rows, unchanged in _windows(paths, cfg, limit, sieve):
        out.documents += rows
        out.skipped += skipped
        out.unchanged += unchanged
        if not texts:
            continue
        for members, chunks in chunked(texts):
            if not chunks:
                continue
            chunk_texts = [c.text for c in chunks]
            for t in members:
                tally = out.tallies[t.name]
                if not cross_window:
                    tally.seen.clear()
                keys = cache_keys(fps[t.name], chunk_texts)
                hits = cache.get_many(fps[t.name], keys) if cache is not None else None
                overhead = t.tokenizer.overhead
                lengths: list[int] = []
                todo: list[Chunk] = []
                for i, (k, c) in enumerate(zip(keys, chunks)):
                    n = c.tokens + overhead
                    tally.chunks += 1
                    tally.tokens_all += n
                    short = int.from_bytes(k[16:24], "little")
                    if hits is not None and hits[i] is not None:
                        tally.cached += 1
                        continue
                    if short in tally.seen:
                        tally.duplicate += 1
                        continue
                    tally.seen.add(short)
                    tally.tokens += n
                    lengths.append(n)
                    todo.append(c)
                if lengths:
                    info = t.info
                    plan = plan_batches(
                        lengths,
                        max_items=info.max_batch_inputs,
                        max_tokens=info.max_batch_tokens,
                        padded=t.local,
                    )
                    tally.requests += len(plan)
                    if t.local and tally.warm_tokens == 0:
                        _warm_up(t, tally, todo, overhead)
    return out


if TYPE_CHECKING:
    from embedgen.pipeline.read import DocBatch

    Chunked = Callable[[list[str]], Iterator[tuple[list[Target], list[Chunk]]]]
    """Texts of a window -> (targets, their chunks) per chunking."""
    Sieve = Callable[[DocBatch], tuple[DocBatch, int]]
    """Documents -> those a sink does not hold unchanged, and how many it does."""


def _chunked_alone(targets: list[Target]) -> Chunked:
    """Texts chunked once per distinct tokenizer and chunk size, for the targets sharing it."""
    from embedgen.pipeline.chunk import Chunker

    groups: dict[tuple[Any, int, int], list[Target]] = {}
    for t in targets:
        groups.setdefault((_tokenizer_id(t.tokenizer), t.chunk_tokens, t.overlap), []).append(t)
    chunkers = {key: Chunker(ts[0].tokenizer, max_tokens=key[1], overlap=key[2])
                for key, ts in groups.items()}  # fmt: skip

    def chunked(texts: list[str]) -> Iterator[tuple[list[Target], list[Chunk]]]:
        for key, members in groups.items():
            yield members, [c for doc in chunkers[key].chunk(texts) for c in doc]

    return chunked


def _chunked_shared(targets: list[Target], overlap: int) -> Chunked:
    """Texts chunked once for every slot (``SharedChunker``); each slot counts its view."""
    from embedgen.pipeline.shared_chunks import SharedChunker, slot_window

    chunker = SharedChunker([(t.tokenizer, t.chunk_tokens) for t in targets], overlap=overlap)

    def chunked(texts: list[str]) -> Iterator[tuple[list[Target], list[Chunk]]]:
        chunks = [c for doc in chunker.chunk(texts) for c in doc]
        for i, t in enumerate(targets):
            yield [t], slot_window(chunks, i)

    return chunked


def _windows(
    paths: list[Path], cfg: Config, limit: int | None, sieve: Sieve | None = None
) -> Iterator[tuple[list[str], int, int, int]]:
    """(texts to embed, documents skipped, documents, documents unchanged in the sink) per
    document window of ``run``.

    The run's own reading and skip rules; the texts are chunked by the caller, once per
    tokenizer and chunk size.
    """
    from dataclasses import replace

    from embedgen.pipeline.windows import limited, read_options, select

    opts = read_options(cfg.run)
    if sieve is None:  # only a sink's fingerprints need the ids and the kept columns
        opts = replace(opts, id_column=None, keep=())
    for docs in limited(paths, opts, limit):
        rows = len(docs.texts) + len(docs.skips)
        unchanged = 0
        if sieve is not None:
            docs, unchanged = sieve(docs)
        valid, skips = select(docs)
        yield [docs.texts[i] for i in valid], len(skips), rows, unchanged  # type: ignore[misc]


def _warm_up(t: Target, tally: Tally, chunks: list[Chunk], overhead: int) -> None:
    """Time the local model on up to WARMUP_CHUNKS of the corpus's chunks, batched as run does."""
    from embedgen.pipeline.batch import plan_batches
    from embedgen.providers.base import Batch

    sample = chunks[:WARMUP_CHUNKS]
    if t.provider is None or not sample:
        return
    lengths = [len(c.input_ids or ()) or c.tokens + overhead for c in sample]
    plan = plan_batches(lengths, max_items=t.info.max_batch_inputs,
                        max_tokens=t.info.max_batch_tokens, padded=True)  # fmt: skip
    batches = [
        Batch([sample[i].text for i in idx], [lengths[i] for i in idx],
              [sample[i].input_ids for i in idx] if sample[0].input_ids is not None else None)  # type: ignore[misc]
        for idx in plan
    ]  # fmt: skip
    t.provider.embed_batch(batches[0])  # untimed: first-call allocations
    start = time.perf_counter()
    for b in batches:
        t.provider.embed_batch(b)
    tally.warm_seconds = time.perf_counter() - start
    tally.warm_tokens = sum(lengths)


def _tokenizer_id(tok: Any) -> Any:
    kind = type(tok).__name__
    if kind in ("BpeTokenizer", "EstimateTokenizer", "JsonTokenizer"):
        return (kind, getattr(tok, "name", ""))
    return (kind, id(tok))


def count_documents(paths: list[Path]) -> int:
    """Rows in every input: Parquet footers, or newline-counted JSONL lines."""
    from embedgen.pipeline.read import count_rows, input_format

    total = count_rows(paths)
    if total is not None:
        return total
    import gzip

    n = 0
    for p in paths:
        if input_format(p) == "parquet":
            n += count_rows([p]) or 0
            continue
        opener: Any = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rb") as f:
            last = b"\n"
            for block in iter(lambda: f.read(1 << 20), b""):
                n += block.count(b"\n") - block.count(b"\n\n")  # blank lines are not rows
                last = block[-1:]
            n += last != b"\n"
    return n


# Turning counts into a report --------------------------------------------------------


def time_estimate(t: Target, tally: Tally, requests: float, tokens: float) -> tuple[float, str]:
    """(seconds, how it was estimated) to embed ``tokens`` in ``requests``."""
    if t.local:
        if tally.warm_tokens and tally.warm_seconds > 0:
            rate = tally.warm_tokens / tally.warm_seconds
            return tokens / rate, f"measured warm-up: {rate:,.0f} tokens/s"
        return 0.0, "nothing to embed"
    floor = requests * ASSUMED_LATENCY_S / max(1, t.info.max_concurrency)
    parts = []
    seconds = floor
    if t.rpm:
        seconds = max(seconds, requests / t.rpm * 60)
        parts.append(f"rpm {t.rpm:,}")
    if t.tpm:
        seconds = max(seconds, tokens / t.tpm * 60)
        parts.append(f"tpm {t.tpm:,}")
    latency = f"~{ASSUMED_LATENCY_S:g}s/request assumed, {t.info.max_concurrency} in flight"
    return seconds, (", ".join(parts) + "; " if parts else "no rate limit configured; ") + latency


def batch_time(misses: int, scale: float, has_batch: bool) -> dict[str, Any]:
    """Batch mode's jobs and time: every job ends within the completion window."""
    if not has_batch:
        return {"batch_jobs": None, "batch_seconds_max": None}
    from embedgen.batch.client import COMPLETION_WINDOW_S
    from embedgen.batch.pack import Limits

    per_job = Limits().file_inputs
    return {"batch_jobs": -(-round(misses * scale) // per_job),
            "batch_seconds_max": COMPLETION_WINDOW_S}  # fmt: skip


def row(
    t: Target, counted: Counted, scale: float, remaining: int | None, budget_note: str
) -> dict[str, Any]:
    """The report of one provider (what ``--json`` prints in ``providers``)."""
    tally = counted.tallies[t.name]
    tokens = round(tally.tokens * scale)
    requests = round(tally.requests * scale)
    cost = cost_pico(tokens, t.info.price_per_mtok)
    batch_cost = (
        cost_pico(tokens, t.batch_usd_per_mtok) if t.batch_usd_per_mtok is not None else None
    )
    seconds, basis = time_estimate(t, tally, requests, tokens)
    fits = None if remaining is None else cost <= remaining
    return {
        "provider": t.name,
        "kind": t.info.kind,
        "model": t.info.model,
        "documents": round(counted.documents * scale),
        "skipped": round(counted.skipped * scale),
        "unchanged_in_sink": round(counted.unchanged * scale),
        "chunks": round(tally.chunks * scale),
        "cached_chunks": round(tally.cached * scale),
        "cached_pct": round(100 * tally.cached / tally.chunks, 2) if tally.chunks else 0.0,
        "duplicate_chunks": round(tally.duplicate * scale),
        "tokens": tokens,
        "tokens_all_chunks": round(tally.tokens_all * scale),
        "token_count": t.token_basis,
        "requests": requests if not t.local else None,
        "price_usd_per_mtok": t.info.price_per_mtok,
        "cost_usd": usd(cost),
        "batch_price_usd_per_mtok": t.batch_usd_per_mtok,
        "batch_cost_usd": usd(batch_cost) if batch_cost is not None else None,
        **batch_time(tally.chunks - tally.cached - tally.duplicate, scale, batch_cost is not None),
        "seconds": round(seconds, 3),
        "time_basis": basis,
        "fits_budget": fits,
        "budget_remaining_usd": usd(remaining) if remaining is not None else None,
        "budget_note": budget_note
        if fits is not False
        else f"over by {fmt_usd(cost - (remaining or 0))}; {budget_note}",
    }
