"""The default model's vectors do not depend on their batch (#22).

The default quantizes its activations to int8 per call: the scale is taken over everything
the call holds, so in a shared batch a text's vector moved with its neighbours (cos ~0.997).
Each text now runs alone, the threads side by side, and its vector is a function of the
text only.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from embedgen.config import OnnxConfig
from embedgen.models.local import ORIGINAL_DEFAULT, default_model, resolve_model
from embedgen.models.onnx_info import graph_op_types, quantizes_per_call
from embedgen.providers.base import Batch
from embedgen.providers.onnx import OnnxProvider
from tests.cache_corpus import sentences

TARGET = "The committee postponed its decision on the harbour bridge until the spring."


def _batches(n: int) -> list[list[str]]:
    """``n`` batches that each hold TARGET among other neighbours, of other sizes and lengths,
    at another position."""
    pool = sentences(400, seed=7)
    rng = random.Random(22)
    out = []
    for _ in range(n):
        size = rng.randint(2, 40)
        others = []
        for _ in range(size - 1):
            words = rng.randint(1, 6)
            others.append(" ".join(rng.sample(pool, words)))
        others.insert(rng.randrange(size), TARGET)
        out.append(others)
    return out


def _vectors_of_target(provider: OnnxProvider, batches: list[list[str]]) -> list[np.ndarray]:
    found = []
    for texts in batches:
        vectors = provider.embed_batch(Batch(texts=texts, token_counts=[0] * len(texts))).vectors
        found.append(vectors[texts.index(TARGET)])
    return found


@pytest.fixture(scope="module")
def default_spec():  # type: ignore[no-untyped-def]
    return default_model()


def test_the_default_quantizes_per_call_and_the_original_does_not(default_spec) -> None:  # type: ignore[no-untyped-def]
    assert quantizes_per_call(default_spec.onnx_path)
    original = resolve_model(ORIGINAL_DEFAULT).onnx_path
    assert not quantizes_per_call(original)
    assert "MatMul" in graph_op_types(original)


def test_the_same_text_in_20_batches_gives_the_same_bits(default_spec) -> None:  # type: ignore[no-untyped-def]
    provider = OnnxProvider(default_spec, OnnxConfig(num_threads=2))
    assert provider.per_text and provider.info.details["calls"] == "one text per call"
    try:
        found = _vectors_of_target(provider, _batches(20))
    finally:
        provider.close()
    assert all(np.array_equal(found[0], v) for v in found[1:])
    alone = OnnxProvider(default_spec, OnnxConfig(num_threads=1))
    try:
        single = alone.embed_texts([TARGET])[0]
    finally:
        alone.close()
    assert np.array_equal(found[0], single), "one thread or two, alone or in a batch: same bits"


def test_shared_batches_would_move_the_vector(default_spec) -> None:  # type: ignore[no-untyped-def]
    """What the default did before: the scale taken over a shared batch moves the vector."""
    provider = OnnxProvider(default_spec, OnnxConfig(one_text_per_call=False))
    assert not provider.per_text and "calls" not in provider.info.details
    try:
        found = _vectors_of_target(provider, _batches(20))
    finally:
        provider.close()
    assert not all(np.array_equal(found[0], v) for v in found[1:])
    assert min(float(found[0] @ v) for v in found) > 0.99


def test_running_per_text_is_part_of_the_cache_key(default_spec) -> None:  # type: ignore[no-untyped-def]
    """Vectors computed either way differ in their last digits: they never share entries."""
    per_text = OnnxProvider(default_spec, OnnxConfig())
    shared = OnnxProvider(default_spec, OnnxConfig(one_text_per_call=False))
    assert per_text.info.fingerprint.endswith("|per_text=True")
    assert per_text.info.fingerprint != shared.info.fingerprint
    original = OnnxProvider(resolve_model(ORIGINAL_DEFAULT), OnnxConfig())
    assert not original.per_text and "per_text" not in original.info.fingerprint
