"""Unchanged documents, recognised without tokenizing them again (the nightly re-run).

Every document a run chunks gets a record in the cache: its key (model fingerprint,
chunk window and overlap, and the text) maps to its chunks' spans and token counts. A
later run that meets the same document rebuilds its chunks from the record, slicing the
text, and only then looks the chunks up; a document without a record is tokenized and
chunked as usual. A chunk rebuilt this way has no model-ready ids: if its vector is
missing after all, the provider tokenizes its text, which gives the same tokens (a chunk's
text re-tokenizes to its own tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedgen.cache import doc_keys
from embedgen.pipeline.chunk import Chunk, Chunker

Spans = list[tuple[int, int, int]]
"""(char_start, char_end, tokens) per chunk of a document."""


def chunk_params(chunker: Chunker) -> str:
    """What a document's chunks depend on besides the model and the text."""
    return f"window={chunker.window}|overlap={chunker.overlap}"


class DocIndex:
    def __init__(self, cache: Any, fp_id: bytes, chunker: Chunker) -> None:
        self.cache = cache
        self.fp_id = fp_id
        self.params = chunk_params(chunker)

    def known(self, texts: Sequence[str]) -> tuple[list[bytes], list[Spans | None]]:
        """Each text's document key, and its chunks' spans when it was chunked before."""
        keys = doc_keys(self.fp_id, self.params, texts)
        out: list[Spans | None] = []
        for raw in self.cache.get_docs(keys):
            if raw is None or len(raw) % 12:
                out.append(None)
                continue
            rows = np.frombuffer(raw, dtype="<u4").reshape(-1, 3).tolist()
            out.append([(int(a), int(b), int(c)) for a, b, c in rows])
        return keys, out

    @staticmethod
    def chunks(doc: int, text: str, spans: Spans) -> list[Chunk] | None:
        """A document's chunks rebuilt from its record (None if the record does not fit it)."""
        if not spans or spans[-1][1] > len(text):
            return None
        return [Chunk(doc, k, a, b, text[a:b], t, None) for k, (a, b, t) in enumerate(spans)]

    @staticmethod
    def record(chunks: Sequence[Chunk]) -> bytes:
        rows = [(c.char_start, c.char_end, c.tokens) for c in chunks]
        return np.asarray(rows, dtype="<u4").tobytes()

    def put(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self.cache.put_docs(items)
