"""Tokenizers that count tokens the way a hosted API does, for chunking and batching.

- ``cl100k_base`` / ``o200k_base`` / ``voyage3_base``: exact BPE counts from
  ``bpe-openai`` (OpenAI's text-embedding models use cl100k_base; Voyage's voyage-3
  family uses voyage3_base).
- a ``tokenizer.json`` path: the open model's own tokenizer, for TEI/vLLM/Ollama
  servers (special tokens the server adds count as overhead).
- ``estimate``: for APIs without a public tokenizer here (Cohere, Mistral), a
  deliberately high estimate: every ASCII run of up to 4 letters or digits is one
  token, every other non-space character is one token, so chunks stay within limits.

All of them take text (``model_inputs`` is None): the API tokenizes again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedgen.errors import ConfigError, ModelError

BPE_ENCODINGS = ("cl100k_base", "o200k_base", "voyage3_base")
_SEGMENT_CHARS = 200_000
"""bpe-openai refuses texts of 1M characters; long documents are encoded in pieces."""


@functools.cache
def _encoding(name: str) -> Any:
    try:
        import bpe_openai
    except ImportError:
        raise ConfigError(
            f"tokenizer {name!r} needs the bpe-openai package: pip install bpe-openai"
        ) from None
    return bpe_openai.get_encoding(name)


def _segments(text: str, size: int = _SEGMENT_CHARS) -> list[tuple[int, int]]:
    """Cut a long text before a space that follows a non-space (a BPE pre-token edge)."""
    out, start, n = [], 0, len(text)
    while n - start > size:
        cut = start + size
        lo = start + size // 2
        while cut > lo and not (text[cut] == " " and not text[cut - 1].isspace()):
            cut -= 1
        if cut == lo:
            cut = start + size
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


class BpeTokenizer:
    """OpenAI-style byte-level BPE (``bpe-openai``), with character spans per token."""

    def __init__(self, encoding: str) -> None:
        if encoding not in BPE_ENCODINGS:
            raise ConfigError(f"unknown BPE encoding {encoding!r}; use one of {BPE_ENCODINGS}")
        self.name = encoding
        self._enc = _encoding(encoding)

    @property
    def overhead(self) -> int:
        return 0

    def count(self, text: str) -> int:
        return sum(len(self._enc.encode_ordinary(text[a:b])) for a, b in _segments(text))

    def encode_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        return [self._one(t) for t in texts]

    def _one(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for a, b in _segments(text):
            part = text[a:b]
            part_ids = self._enc.encode_ordinary(part)
            ids.extend(part_ids)
            spans.extend((a + s, a + e) for s, e in self._spans(part, part_ids))
        return ids, spans

    def _spans(self, text: str, ids: list[int]) -> list[tuple[int, int]]:
        # Map byte ranges to characters: a token that starts inside a multi-byte
        # character starts at that character; one that ends inside it ends after it.
        data = text.encode("utf-8", "surrogatepass")
        char_at = [0] * (len(data) + 1)
        c = 0
        for i, byte in enumerate(data):
            if not 0x80 <= byte < 0xC0:
                c += 1
            char_at[i + 1] = c
        spans, pos = [], 0
        for tid in ids:
            end = pos + len(self._enc.decode_single_token_bytes(tid))
            start_char = char_at[pos] - (1 if pos < len(data) and 0x80 <= data[pos] < 0xC0 else 0)
            spans.append((max(0, start_char), char_at[min(end, len(data))]))
            pos = end
        return spans

    def model_inputs(self, ids: Sequence[int]) -> list[int] | None:
        return None


class JsonTokenizer:
    """An open model's ``tokenizer.json``, counting what a compatible server will see."""

    def __init__(self, path: Path) -> None:
        from embedgen.providers.hf_tokenizer import HFTokenizer

        if not path.is_file():
            raise ConfigError(f"tokenizer file not found: {path}")
        try:
            self._tok = HFTokenizer(path)
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        self.name = str(path)

    @property
    def overhead(self) -> int:
        return self._tok.overhead

    def count(self, text: str) -> int:
        return len(self._tok.encode_offsets([text])[0][0]) + self.overhead

    def encode_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        return self._tok.encode_offsets(texts)

    def model_inputs(self, ids: Sequence[int]) -> list[int] | None:
        return None


_PIECE = re.compile(r"[A-Za-z0-9]{1,4}|[^\sA-Za-z0-9]")


class EstimateTokenizer:
    """A high estimate for APIs whose tokenizer is not available (see module docstring)."""

    name = "estimate"

    @property
    def overhead(self) -> int:
        return 2

    def count(self, text: str) -> int:
        return sum(1 for _ in _PIECE.finditer(text)) + self.overhead

    def encode_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        out = []
        for text in texts:
            spans = [m.span() for m in _PIECE.finditer(text)]
            out.append(([0] * len(spans), spans))
        return out

    def model_inputs(self, ids: Sequence[int]) -> list[int] | None:
        return None


def api_tokenizer(
    kind: str, setting: str | None
) -> BpeTokenizer | JsonTokenizer | EstimateTokenizer:
    """The tokenizer named by a provider's ``tokenizer`` setting, or the kind's default."""
    from embedgen.config.catalog import default_tokenizer

    name = setting or default_tokenizer(kind)
    if name in BPE_ENCODINGS:
        return BpeTokenizer(name)
    if name == "estimate":
        return EstimateTokenizer()
    return JsonTokenizer(Path(name).expanduser())
