"""Stage 1 and 2: read documents, apply the skip rules, chunk into windows.

A window is one document batch of the reader (``sort_window`` rows) with its chunks.
Null, empty and token-less texts are skipped (recorded, never embedded); malformed rows
arrive from the reader already as skips. ``cost-estimate`` uses the same reading and
skip rules (:func:`limited`, :func:`select`), so it counts exactly what ``run`` embeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from embedgen.pipeline.chunk import Chunk, Chunker
from embedgen.pipeline.read import DocBatch, ReadOptions, Skip, read_documents

if TYPE_CHECKING:
    from embedgen.config import RunConfig
    from embedgen.pipeline.docindex import DocIndex
    from embedgen.providers.base import ProviderInfo, TextTokenizer


@dataclass
class Window:
    docs: DocBatch
    chunks: list[Chunk]
    doc_index: list[int]
    """Row in ``docs`` for each chunk."""
    skips: list[Skip]
    documents: int
    """Rows of the input this window stands for (including malformed ones)."""
    new_docs: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Document records to store once the window's vectors are cached (see DocIndex)."""
    tokenized: int = 0
    """Documents tokenized (not rebuilt from the document index)."""


def read_options(run: RunConfig) -> ReadOptions:
    return ReadOptions(
        text_column=run.text_column,
        id_column=run.id_column,
        keep=tuple(run.keep),
        on_error=run.on_error,
        batch_rows=run.sort_window,
    )


def limited(paths: list[Path], opts: ReadOptions, limit: int | None) -> Iterator[DocBatch]:
    """Document batches of ``paths``, cut after the first ``limit`` documents."""
    seen = 0
    for docs in read_documents(paths, opts):
        if limit is not None and seen >= limit:
            return
        if limit is not None and seen + len(docs.texts) > limit:
            keep_n = limit - seen
            docs.ids, docs.texts = docs.ids[:keep_n], docs.texts[:keep_n]
            docs.row_numbers = docs.row_numbers[:keep_n]
            docs.keep = docs.keep.slice(0, keep_n) if docs.keep is not None else None
        seen += len(docs.texts)
        yield docs


def select(docs: DocBatch) -> tuple[list[int], list[Skip]]:
    """(rows with text to embed, every skip of the batch): null and blank texts are skipped.

    A malformed row is already in ``docs.skips`` (with a None text): it is counted once.
    """
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
    return valid, skips


def make_chunker(tokenizer: TextTokenizer, info: ProviderInfo, run: RunConfig) -> Chunker:
    """The run's chunker: windows of ``run.max_tokens`` (at most the model's limit)."""
    limit = info.max_tokens
    return Chunker(tokenizer, max_tokens=min(run.max_tokens or limit, limit), overlap=run.overlap)


class Windows:
    """Read → skip rules → chunk, one document batch at a time."""

    def __init__(
        self,
        chunker: Chunker,
        opts: ReadOptions,
        limit: int | None = None,
        index: DocIndex | None = None,
        sieve: Callable[[DocBatch], tuple[DocBatch, int]] | None = None,
    ) -> None:
        self.chunker = chunker
        self.opts = opts
        self.limit = limit
        self.index = index
        """Records of documents chunked before: unchanged ones are not tokenized again."""
        self.sieve = sieve
        """Takes out the documents a sink already holds unchanged (and says how many)."""

    def __call__(self, paths: list[Path]) -> Iterator[Window]:
        for docs in limited(paths, self.opts, self.limit):
            unchanged = 0
            if self.sieve is not None:
                docs, unchanged = self.sieve(docs)
            w = self.window(docs)
            w.documents += unchanged
            yield w

    def window(self, docs: DocBatch) -> Window:
        """One document batch, skipped and chunked (an engine's chunk task calls this)."""
        valid, skips = select(docs)
        texts: list[str] = [docs.texts[i] for i in valid]  # type: ignore[misc]
        per_doc, new_docs, tokenized = self._chunk(texts)
        chunks: list[Chunk] = []
        doc_index: list[int] = []
        for i, doc_chunks in zip(valid, per_doc):
            if not doc_chunks:
                skips.append(docs.skip(i, "text has no tokens"))
            chunks.extend(doc_chunks)
            doc_index.extend([i] * len(doc_chunks))
        documents = len(docs.texts) + len(docs.skips)
        return Window(docs, chunks, doc_index, skips, documents, new_docs, tokenized)

    def _chunk(self, texts: list[str]) -> tuple[list[list[Chunk]], list[tuple[bytes, bytes]], int]:
        """Chunks per text (from document records where known, else by tokenizing), the new
        records, and how many texts were tokenized."""
        if self.index is None:
            return self.chunker.chunk(texts), [], len(texts)
        keys, spans = self.index.known(texts)
        per_doc: list[list[Chunk]] = []
        todo: list[int] = []  # texts without a usable record: tokenized as usual
        for j, (text, sp) in enumerate(zip(texts, spans)):
            known = self.index.chunks(j, text, sp) if sp is not None else None
            if known is None:
                todo.append(j)
            per_doc.append(known or [])
        for j, fresh in zip(todo, self.chunker.chunk([texts[j] for j in todo])):
            per_doc[j] = fresh
        new_docs = [(keys[j], self.index.record(per_doc[j])) for j in todo if per_doc[j]]
        return per_doc, new_docs, len(todo)
