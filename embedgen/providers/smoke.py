"""The proof that a downloaded model works: load it once and embed a sentence.

Lives above :mod:`embedgen.models` (it needs the ONNX provider); ``embedgen
download`` hands :func:`smoke_test` to :func:`embedgen.models.download.download_model`,
which runs it on the staged folder before the folder replaces the old one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedgen.errors import ModelError

if TYPE_CHECKING:
    from embedgen.models.local import ModelSpec

SMOKE_SENTENCE = "embedgen checks that this model loads and embeds a sentence."


def smoke_test(spec: ModelSpec) -> int:
    """Load the model once with the ONNX provider, embed a sentence, return its dimension."""
    import numpy as np

    from embedgen.config import OnnxConfig
    from embedgen.providers.onnx import OnnxProvider

    provider = OnnxProvider(spec, OnnxConfig(device="cpu", warmup_batches=0))
    vecs = provider.embed_texts([SMOKE_SENTENCE])
    if vecs.ndim != 2 or vecs.shape[0] != 1 or not np.isfinite(vecs).all() or not vecs.any():
        raise ModelError(f"{spec.name}: the test sentence gave no usable vector")
    return int(vecs.shape[1])
