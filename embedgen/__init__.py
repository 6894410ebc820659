"""embedgen: batch-embed document corpora into Parquet, resumably and within budget.

``embedgen.embed_corpus`` is :func:`embedgen.engines.embed_corpus` itself (imported
on first use, so ``import embedgen`` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from embedgen.engines import embed_corpus

__all__ = ["__version__", "embed_corpus"]


def __getattr__(name: str) -> Any:
    if name == "embed_corpus":
        from embedgen.engines import embed_corpus

        return embed_corpus
    raise AttributeError(f"module 'embedgen' has no attribute {name!r}")
