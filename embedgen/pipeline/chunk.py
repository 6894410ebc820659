"""Token-window chunking with exact character offsets.

A document is tokenized once (without special tokens). Windows of at most
``max_tokens - overhead`` content tokens are cut, stepping by ``window - overlap``;
a window never ends inside a word when it can end at a word boundary within its
last half, so each chunk's text re-tokenizes to the same tokens. A chunk's text is
``document[char_start:char_end]``, an exact slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embedgen.errors import ConfigError
from embedgen.providers.base import TextTokenizer


@dataclass(frozen=True, slots=True)
class Chunk:
    doc: int
    """Index of the document in its DocBatch."""
    index: int
    """Chunk number within the document."""
    char_start: int
    char_end: int
    text: str
    tokens: int
    """Content tokens (no special tokens or prefix)."""
    input_ids: list[int] | None
    """Model-ready ids, when the provider takes ids."""


class Chunker:
    def __init__(self, tokenizer: TextTokenizer, *, max_tokens: int, overlap: int = 0) -> None:
        self.tokenizer = tokenizer
        self.window = max_tokens - tokenizer.overhead
        if self.window < 1:
            raise ConfigError(f"max_tokens {max_tokens} leaves no room for text")
        if overlap >= self.window:
            raise ConfigError(
                f"overlap {overlap} must be smaller than the chunk window ({self.window} tokens)"
            )
        self.overlap = overlap

    def chunk(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """Chunks per text; a text with no tokens gets no chunks."""
        out: list[list[Chunk]] = []
        encoded = self.tokenizer.encode_offsets(texts)
        for doc, (text, (ids, offsets)) in enumerate(zip(texts, encoded)):
            out.append(self._windows(doc, text, ids, offsets))
        return out

    def _windows(
        self, doc: int, text: str, ids: list[int], offsets: list[tuple[int, int]]
    ) -> list[Chunk]:
        n = len(ids)
        if n == 0:
            return []
        tok = self.tokenizer
        if n <= self.window:
            start, end = offsets[0][0], offsets[-1][1]
            return [Chunk(doc, 0, start, end, text[start:end], n, tok.model_inputs(ids))]
        chunks: list[Chunk] = []
        lo = 0
        while lo < n:
            hi = min(lo + self.window, n)
            if hi < n:
                hi = _word_boundary(text, offsets, lo, hi)
            start, end = offsets[lo][0], offsets[hi - 1][1]
            window_ids = ids[lo:hi]
            chunks.append(
                Chunk(
                    doc,
                    len(chunks),
                    start,
                    end,
                    text[start:end],
                    hi - lo,
                    tok.model_inputs(window_ids),
                )
            )
            if hi >= n:
                break
            floor = lo + 1
            lo = max(hi - self.overlap, floor)
            if self.overlap:
                lo = _word_start(text, offsets, lo, floor)
        return chunks


def _continues(text: str, offsets: list[tuple[int, int]], i: int) -> bool:
    """True when token i continues the word of token i-1 (no gap, letters on both sides)."""
    prev_end, start = offsets[i - 1][1], offsets[i][0]
    if start != prev_end or start == 0 or start >= len(text):
        return False
    return text[start - 1].isalnum() and text[start].isalnum()


def _word_boundary(text: str, offsets: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Move ``hi`` back so the window does not split a word, within its last half."""
    floor = lo + max(1, (hi - lo) // 2)
    cut = hi
    while cut > floor and _continues(text, offsets, cut):
        cut -= 1
    return hi if cut == floor and _continues(text, offsets, cut) else cut


def _word_start(text: str, offsets: list[tuple[int, int]], lo: int, floor: int) -> int:
    """Move an overlap start back to the start of its word, not below ``floor``."""
    while lo > floor and _continues(text, offsets, lo):
        lo -= 1
    return lo
