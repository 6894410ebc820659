"""embedgen: batch-embed document corpora into Parquet, resumably and within budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from embedgen.pipeline.run import RunSummary

__all__ = ["__version__", "embed_corpus"]


def embed_corpus(*args: Any, **kwargs: Any) -> RunSummary:
    """Embed a corpus into a Parquet file; see :func:`embedgen.pipeline.run.embed_corpus`."""
    from embedgen.pipeline.run import embed_corpus as _embed

    return _embed(*args, **kwargs)
