"""One chunking for several models: every chunk fits every model, in its own tokens.

Documents are cut once, under the strictest model (the smallest window of content tokens:
its ``max_tokens`` less its special tokens and prefix). Then every chunk is tokenized with
every other model's tokenizer; a chunk too long for one model is cut further, by that
model's own windows (without overlap), for all of them, and the pieces are checked again. So row
(id, chunk) is the same text in every vector column.

A :class:`SharedChunk` is the first model's view of the chunk (its ``tokens`` and
``input_ids``), with every model's view in ``views``: the same text and span, that
model's token count and model-ready ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from embedgen.errors import DataError
from embedgen.pipeline.chunk import Chunk, Chunker
from embedgen.providers.base import TextTokenizer

MAX_ROUNDS = 8
"""Cuts a chunk may need before it fits every model (each round shortens the pieces)."""


@dataclass(frozen=True, slots=True)
class SharedChunk(Chunk):
    views: tuple[Chunk, ...] = ()
    """The chunk as each model (slot) sees it, in slot order."""


@dataclass(frozen=True)
class _Piece:
    """A span to check: from the strict chunking (``chunk``) or cut further (None)."""

    doc: int
    start: int
    end: int
    chunk: Chunk | None


class SharedChunker(Chunker):
    """Chunks that fit every tokenizer of ``slots`` ((tokenizer, max_tokens) per model)."""

    def __init__(self, slots: Sequence[tuple[TextTokenizer, int]], *, overlap: int = 0) -> None:
        self.tokenizers = [tok for tok, _ in slots]
        # a chunk cut further is cut without overlap: overlapping pieces of a piece could be
        # cut again and again (each may count a token more alone than inside its piece)
        self.cutters = [Chunker(tok, max_tokens=mt) for tok, mt in slots]
        self.windows = [c.window for c in self.cutters]
        self.strict = min(range(len(slots)), key=lambda i: self.windows[i])
        tok, max_tokens = slots[self.strict]
        super().__init__(tok, max_tokens=max_tokens, overlap=overlap)
        self.alike = [same_tokens(t, tok) for t in self.tokenizers]
        """Slots that count in the strict slot's tokens: they take its cut's ids as they are."""

    def chunk(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """Chunks per text, each fitting every model; a text with no tokens gets none."""
        strict = super().chunk(texts)
        todo = [_Piece(c.doc, c.char_start, c.char_end, c) for doc in strict for c in doc]
        fitted: list[list[tuple[int, int, tuple[Chunk, ...]]]] = [[] for _ in texts]
        for _ in range(MAX_ROUNDS):
            if not todo:
                break
            todo = self._round(texts, todo, fitted)
        if todo:
            p = todo[0]
            raise DataError(f"document {p.doc}: a chunk could not be cut to fit every model")
        out: list[list[Chunk]] = []
        for doc, pieces in enumerate(fitted):
            pieces.sort(key=lambda p: (p[0], p[1]))
            out.append([self._shared(doc, i, views) for i, (_, _, views) in enumerate(pieces)])
        return out

    def _round(
        self,
        texts: Sequence[str],
        todo: list[_Piece],
        fitted: list[list[tuple[int, int, tuple[Chunk, ...]]]],
    ) -> list[_Piece]:
        """Check ``todo`` with every tokenizer: keep what fits, cut the rest (returned)."""
        pieces = [texts[p.doc][p.start : p.end] for p in todo]
        strict = self.tokenizers[self.strict].encode_offsets(pieces)
        encoded = [
            strict if self.alike[i] else tok.encode_offsets(pieces)
            for i, tok in enumerate(self.tokenizers)
        ]
        again: list[_Piece] = []
        for j, p in enumerate(todo):
            views: list[Chunk] = []
            over = None
            for i, tok in enumerate(self.tokenizers):
                ids = encoded[i][j][0]
                if len(ids) > self.windows[i]:
                    over = i
                    break
                if self.alike[i] and p.chunk is not None:
                    # the strict cut's ids from its document, as a single-model run sends them
                    views.append(p.chunk)
                    continue
                views.append(Chunk(p.doc, 0, p.start, p.end, pieces[j], len(ids),
                                   tok.model_inputs(ids)))  # fmt: skip
            if over is None:
                fitted[p.doc].append((p.start, p.end, tuple(views)))
                continue
            for sub in self._cut(over, pieces[j]):
                start = p.start + sub.char_start
                again.append(_Piece(p.doc, start, start + len(sub.text), None))
        return again

    def _cut(self, slot: int, text: str) -> list[Chunk]:
        """``text`` cut by slot ``slot``'s windows, into two pieces at least.

        A text that fits as a part of its document may not fit alone (a tokenizer that
        marks a text's start); then it is cut by a window one token shorter than it.
        """
        subs = self.cutters[slot].chunk([text])[0]
        if len(subs) == 1 and subs[0].tokens > 1:
            tok = self.tokenizers[slot]
            subs = Chunker(tok, max_tokens=tok.overhead + subs[0].tokens - 1).chunk([text])[0]
        return subs

    @staticmethod
    def _shared(doc: int, index: int, views: tuple[Chunk, ...]) -> SharedChunk:
        views = tuple(replace(v, doc=doc, index=index) for v in views)
        first = views[0]
        return SharedChunk(doc, index, first.char_start, first.char_end, first.text,
                           first.tokens, first.input_ids, views)  # fmt: skip


def slot_window(chunks: Sequence[Chunk], slot: int) -> list[Chunk]:
    """Slot ``slot``'s view of a window's shared chunks."""
    return [c.views[slot] for c in chunks]  # type: ignore[attr-defined]


def same_tokens(a: TextTokenizer, b: TextTokenizer) -> bool:
    """Whether two tokenizers count alike (the same tokenizer file and prefix)."""
    from embedgen.providers.hf_tokenizer import HFTokenizer

    if a is b:
        return True
    if not (isinstance(a, HFTokenizer) and isinstance(b, HFTokenizer)):
        return False
    return a.prefix == b.prefix and a.path.read_bytes() == b.path.read_bytes()
