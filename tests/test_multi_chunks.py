"""Shared chunks for several models: one cut that fits every model, in its own tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_server import build_tokenizer

from embedgen.models.local import resolve_model
from embedgen.pipeline.chunk import Chunker
from embedgen.pipeline.shared_chunks import SharedChunker, same_tokens, slot_window
from embedgen.providers.api_tokenizers import BpeTokenizer
from embedgen.providers.hf_tokenizer import HFTokenizer

DOCS = [
    "Short text.",
    " ".join(f"word{i} alpha beta gamma delta, epsilon." for i in range(120)),
    "Pneumonoultramicroscopicsilicovolcanoconiosis " * 40,
    "",
]


@pytest.fixture
def tokenizers(tmp_path: Path) -> list[HFTokenizer | BpeTokenizer]:
    build_tokenizer(tmp_path)  # a tiny XLM-R-like unigram vocabulary: many tokens per word
    minilm = HFTokenizer(resolve_model("default").tokenizer_path)
    unigram = HFTokenizer(tmp_path / "tokenizer.json", prefix="doc: ")
    return [minilm, unigram, BpeTokenizer("cl100k_base")]


def test_every_chunk_fits_every_tokenizer(tokenizers) -> None:
    limits = [64, 48, 40]
    chunker = SharedChunker(list(zip(tokenizers, limits)), overlap=8)
    per_doc = chunker.chunk(DOCS)
    assert per_doc[3] == []
    for doc, chunks in zip(DOCS, per_doc):
        assert [c.index for c in chunks] == list(range(len(chunks)))
        for c in chunks:
            assert doc[c.char_start : c.char_end] == c.text
            assert len(c.views) == 3
            for tok, limit, view in zip(tokenizers, limits, c.views):
                ids = tok.encode_offsets([c.text])[0][0]
                assert len(ids) + tok.overhead <= limit, (c.text, limit)
                assert (view.text, view.char_start, view.index) == (c.text, c.char_start, c.index)
                if view is not c.views[chunker.strict]:  # (the strict cut counts in its doc)
                    assert view.tokens == len(ids)
    # the unigram stand-in needs far more tokens than MiniLM: it decides the cut
    assert chunker.strict == 1


def test_one_tokenizer_cuts_as_a_single_model_run(tokenizers) -> None:
    minilm = tokenizers[0]
    shared = SharedChunker([(minilm, 32), (minilm, 128)], overlap=4).chunk(DOCS)
    single = Chunker(minilm, max_tokens=32, overlap=4).chunk(DOCS)
    assert [[(c.char_start, c.char_end, c.input_ids) for c in d] for d in shared] == [
        [(c.char_start, c.char_end, c.input_ids) for c in d] for d in single
    ]
    wide = slot_window([c for d in shared for c in d], 1)
    assert [c.input_ids for c in wide] == [c.input_ids for d in single for c in d]


def test_a_chunk_too_long_for_another_model_is_cut_for_all(tokenizers) -> None:
    minilm, unigram = tokenizers[0], tokenizers[1]
    # the strict model (smallest window) is MiniLM here, yet the unigram model needs more
    # tokens for the same text: its windows cut MiniLM's chunks further
    chunker = SharedChunker([(minilm, 30), (unigram, 40)])
    assert chunker.strict == 0
    chunks = chunker.chunk(DOCS[1:2])[0]
    single = Chunker(minilm, max_tokens=30).chunk(DOCS[1:2])[0]
    assert len(chunks) > len(single)
    for c in chunks:
        assert len(unigram.encode_offsets([c.text])[0][0]) + unigram.overhead <= 40


def test_same_tokens(tokenizers, tmp_path: Path) -> None:
    minilm, unigram, bpe = tokenizers
    assert same_tokens(minilm, HFTokenizer(resolve_model("default-original").tokenizer_path))
    assert not same_tokens(minilm, unigram)
    assert not same_tokens(unigram, HFTokenizer(tmp_path / "tokenizer.json"))  # prefix differs
    assert not same_tokens(minilm, bpe)
