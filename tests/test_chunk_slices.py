"""A long document is tokenized in slices: the same chunks as tokenizing it whole, and memory
that follows the slice, not the document."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hub_server import build_tokenizer

from embedgen.models.local import resolve_model
from embedgen.pipeline.chunk import Chunker
from embedgen.providers.api_tokenizers import BpeTokenizer
from embedgen.providers.hf_tokenizer import HFTokenizer

PARTS = [
    "Word{i} alpha beta, gamma-delta (epsilon) 12345.67 ",
    "naïve café  two  spaces\n\nnew paragraph ",
    "Pneumonoultramicroscopicsilicovolcanoconiosis ",
    "東京は日本の首都です。 ",
    "tabs\tand\ttrailing   \n",
    "it's don't we'll ",
]


def document(n_parts: int) -> str:
    return "".join(PARTS[i % len(PARTS)].format(i=i) for i in range(n_parts))


class Recording:
    """A tokenizer that records the longest text it was asked to encode."""

    def __init__(self, tok) -> None:
        self.tok = tok
        self.longest = 0
        self.overhead = tok.overhead

    def encode_offsets(self, texts: Sequence[str]):
        self.longest = max([self.longest, *(len(t) for t in texts)])
        return self.tok.encode_offsets(texts)

    def model_inputs(self, ids):
        return self.tok.model_inputs(ids)


@pytest.fixture
def tokenizers(tmp_path: Path) -> list:
    build_tokenizer(tmp_path)  # a tiny XLM-R-like unigram vocabulary (Metaspace pre-tokenizer)
    return [
        HFTokenizer(resolve_model("default").tokenizer_path),
        HFTokenizer(tmp_path / "tokenizer.json", prefix="doc: "),
        BpeTokenizer("cl100k_base"),
    ]


@pytest.mark.parametrize("overlap", [0, 6])
def test_sliced_chunks_equal_whole_document_chunks(tokenizers, overlap: int) -> None:
    texts = [document(400), "short one", document(7), " lead " + document(60) + "  "]
    for tok in tokenizers:
        whole = Chunker(tok, max_tokens=32, overlap=overlap, slice_chars=10**9).chunk(texts)
        spy = Recording(tok)
        sliced = Chunker(spy, max_tokens=32, overlap=overlap, slice_chars=256).chunk(texts)
        assert spy.longest <= 256  # the long texts were tokenized a slice at a time
        assert len(whole[0]) > 50
        for a, b in zip(whole, sliced, strict=True):
            assert [(c.char_start, c.char_end, c.tokens, c.input_ids) for c in b] == [
                (c.char_start, c.char_end, c.tokens, c.input_ids) for c in a
            ], type(tok).__name__
            assert [c.index for c in b] == list(range(len(b)))
        for text, chunks in zip(texts, sliced):
            assert all(text[c.char_start : c.char_end] == c.text for c in chunks)


PEAK = """
import sys, threading, time
from embedgen.config import Config
from embedgen.pipeline.windows import make_chunker
from embedgen.router.build import build_router

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024

router = build_router(Config())
chunker = make_chunker(router.tokenizer(), router.info, Config().run)
text = open(sys.argv[1], encoding="utf-8").read()
base, peak, done = anon(), [0], []
def watch():
    while not done:
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
t = threading.Thread(target=watch)
t.start()
chunks = chunker.chunk([text])[0]
done.append(1)
t.join()
print(json.dumps({"base": base, "peak": peak[0], "chunks": len(chunks)}))
"""


def test_a_huge_document_is_chunked_in_bounded_memory(tmp_path: Path) -> None:
    """2 million characters: tokenized whole, the tokenizer's own buffers and the offsets
    grow ~150 bytes per character (~300 MB here); by slices they stay near one slice."""
    doc = tmp_path / "doc.txt"
    doc.write_text(document(2_000_000 // 45), "utf-8")
    code = "import json\n" + PEAK
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code, str(doc)], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["chunks"] > 1000
    grown = got["peak"] - got["base"]
    assert grown < 120, (got, time.monotonic() - started)
