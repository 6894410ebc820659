"""The texts a variant is measured on: the built-in sample, or the user's own corpus.

The built-in sample (``embedgen/data/sample/``, see
:func:`embedgen.models.calibrate.builtin_texts`) was written for embedgen (Apache-2.0,
like the rest of it): a few hundred short texts of everyday English across news,
science, support requests, recipes, law, reviews, code, shell commands and SQL, with
a few lines in French, German, Spanish, Portuguese, Italian and Dutch; longer
passages (letters, release notes, contributor lists, licences, logs, tables, JSON);
and paragraphs of consecutive short texts, so every position of a 256-token window
is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedgen.errors import InputError

DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class Sample:
    texts: list[str]
    source: str
    """``built-in`` or the corpus path."""

    def describe(self) -> str:
        return f"{len(self.texts)} texts from {self.source}"


def builtin_sample(limit: int | None = None) -> Sample:
    """The built-in sample, its first ``limit`` texts when given."""
    from embedgen.models.calibrate import builtin_texts

    texts = builtin_texts()
    return Sample(texts[:limit] if limit else texts, "built-in")


def corpus_sample(path: str | Path, *, text_column: str = "text", limit: int | None) -> Sample:
    """The first ``limit`` non-empty texts of a Parquet/JSONL corpus (file, glob or folder)."""
    from embedgen.pipeline.read import ReadOptions, discover_inputs, read_documents

    want = limit or DEFAULT_LIMIT
    texts: list[str] = []
    opts = ReadOptions(text_column=text_column, on_error="skip", batch_rows=min(want, 2048))
    for batch in read_documents(discover_inputs(str(path)), opts):
        texts.extend(t for t in batch.texts if t and t.strip())
        if len(texts) >= want:
            break
    if len(texts) < 2:
        raise InputError(f"{path}: the sample needs at least 2 non-empty texts in {text_column!r}")
    return Sample(texts[:want], str(path))


def load_sample(
    corpus: str | Path | None, *, text_column: str = "text", limit: int | None = None
) -> Sample:
    """The user's corpus when given, else the built-in sample."""
    if limit is not None and limit < 2:
        raise InputError("--limit must be at least 2")
    if corpus is None:
        return builtin_sample(limit)
    return corpus_sample(corpus, text_column=text_column, limit=limit)
