"""embedgen: batch-embed document corpora into Parquet, resumably and within budget.

``embedgen.embed_corpus`` is :func:`embedgen.engines.embed_corpus` itself and
``embedgen.encoder_for`` is :func:`embedgen.pipeline.encoder.encoder_for` (each imported
on first use, so ``import embedgen`` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from embedgen.engines import embed_corpus
    from embedgen.pipeline.encoder import encoder_for

__all__ = ["__version__", "embed_corpus", "encoder_for"]


def __getattr__(name: str) -> Any:
    if name == "embed_corpus":
        from embedgen.engines import embed_corpus

        return embed_corpus
    if name == "encoder_for":
        from embedgen.pipeline.encoder import encoder_for

        return encoder_for
    raise AttributeError(f"module 'embedgen' has no attribute {name!r}")
