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


SLICE_CHARS = 65_536
"""A longer text is tokenized in slices of about this many characters, each cut before a
space, as its windows advance: memory follows the slice, not the document."""


class Chunker:
    def __init__(
        self,
        tokenizer: TextTokenizer,
        *,
        max_tokens: int,
        overlap: int = 0,
        slice_chars: int = SLICE_CHARS,
    ) -> None:
        self.tokenizer = tokenizer
        self.window = max_tokens - tokenizer.overhead
        if self.window < 1:
            raise ConfigError(f"max_tokens {max_tokens} leaves no room for text")
        if overlap >= self.window:
            raise ConfigError(
                f"overlap {overlap} must be smaller than the chunk window ({self.window} tokens)"
            )
        self.overlap = overlap
        self.slice_chars = slice_chars

    def chunk(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """Chunks per text; a text with no tokens gets no chunks."""
        out: list[list[Chunk]] = []
        short = [t for t in texts if len(t) <= self.slice_chars]
        encoded = iter(self.tokenizer.encode_offsets(short))
        for doc, text in enumerate(texts):
            if len(text) <= self.slice_chars:
                ids, offsets = next(encoded)
                toks = _Tokens(self.tokenizer, text, self.slice_chars, ids, offsets)
            else:
                toks = _Tokens(self.tokenizer, text, self.slice_chars)
            out.append(self._windows(doc, text, toks))
        return out

    def _windows(self, doc: int, text: str, toks: _Tokens) -> list[Chunk]:
        tok = self.tokenizer
        toks.need(self.window + 1)
        n = toks.known
        if n == 0:
            return []
        if n <= self.window:
            start, end = toks.offset(0)[0], toks.offset(n - 1)[1]
            return [Chunk(doc, 0, start, end, text[start:end], n, tok.model_inputs(toks.ids(0, n)))]
        chunks: list[Chunk] = []
        lo = 0
        while True:
            # the window and the token after it (where the next word may start), or the end
            toks.need(lo + self.window + 1)
            toks.drop(lo - 1)  # _continues(lo) looks one token back
            n = toks.known
            hi = min(lo + self.window, n)
            if hi < n:
                hi = _word_boundary(text, toks, lo, hi)
            start, end = toks.offset(lo)[0], toks.offset(hi - 1)[1]
            chunks.append(Chunk(doc, len(chunks), start, end, text[start:end], hi - lo,
                                tok.model_inputs(toks.ids(lo, hi))))  # fmt: skip
            if hi >= n:
                break
            floor = lo + 1
            lo = max(hi - self.overlap, floor)
            if self.overlap:
                lo = _word_start(text, toks, lo, floor)
        return chunks


class _Tokens:
    """A text's tokens by index in the whole text: all of them (``ids``/``offsets`` given),
    or tokenized a slice at a time on demand, with the ones behind the windows dropped."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        text: str,
        slice_chars: int,
        ids: list[int] | None = None,
        offsets: list[tuple[int, int]] | None = None,
    ) -> None:
        self.tokenizer, self.text, self.slice_chars = tokenizer, text, slice_chars
        self._ids: list[int] = ids if ids is not None else []
        self._offsets: list[tuple[int, int]] = offsets if offsets is not None else []
        self._base = 0
        """Index in the whole text of ``_ids[0]``."""
        self._pos = len(text) if ids is not None else 0
        """Characters tokenized so far."""

    @property
    def known(self) -> int:
        """Tokens up to the end of what is tokenized (all of them once the text is done)."""
        return self._base + len(self._ids)

    def need(self, k: int) -> None:
        """Tokenize until ``k`` tokens are known or the text is done."""
        while self.known < k and self._pos < len(self.text):
            a = self._pos
            b = _slice_end(self.text, a, self.slice_chars)
            ((ids, offsets),) = self.tokenizer.encode_offsets([self.text[a:b]])
            self._ids.extend(ids)
            self._offsets.extend((s + a, e + a) for s, e in offsets)
            self._pos = b

    def drop(self, before: int) -> None:
        """Forget the tokens before index ``before`` (the windows have passed them)."""
        k = before - self._base
        if k > 4096:  # in steps, so a long text is not shifted for every window
            del self._ids[:k]
            del self._offsets[:k]
            self._base = before

    def offset(self, i: int) -> tuple[int, int]:
        return self._offsets[i - self._base]

    def ids(self, lo: int, hi: int) -> list[int]:
        return self._ids[lo - self._base : hi - self._base]


def _slice_end(text: str, a: int, size: int) -> int:
    """Where a slice from ``a`` ends: before a space that follows a non-space, so no token
    of the whole text spans the cut (the next slice starts with the space, as the word
    after it would in the whole text); a text with no such space is cut at ``size``."""
    b = a + size
    if b >= len(text):
        return len(text)
    lo = a + size // 2
    cut = text.rfind(" ", lo, b + 1)
    while cut > lo and text[cut - 1].isspace():
        cut = text.rfind(" ", lo, cut)
    return cut if cut > lo else b


def _continues(text: str, toks: _Tokens, i: int) -> bool:
    """True when token i continues the word of token i-1 (no gap, letters on both sides)."""
    prev_end, start = toks.offset(i - 1)[1], toks.offset(i)[0]
    if start != prev_end or start == 0 or start >= len(text):
        return False
    return text[start - 1].isalnum() and text[start].isalnum()


def _word_boundary(text: str, toks: _Tokens, lo: int, hi: int) -> int:
    """Move ``hi`` back so the window does not split a word, within its last half."""
    floor = lo + max(1, (hi - lo) // 2)
    cut = hi
    while cut > floor and _continues(text, toks, cut):
        cut -= 1
    return hi if cut == floor and _continues(text, toks, cut) else cut


def _word_start(text: str, toks: _Tokens, lo: int, floor: int) -> int:
    """Move an overlap start back to the start of its word, not below ``floor``."""
    while lo > floor and _continues(text, toks, lo):
        lo -= 1
    return lo
