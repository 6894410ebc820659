"""Batch planning: length-sorted, within item, token and attention budgets."""

from __future__ import annotations

import random

from embedgen.pipeline.batch import ATTENTION_FACTOR, plan_batches


def test_every_index_once_sorted_by_length() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(1, 300) for _ in range(1000)]
    plan = plan_batches(lengths, max_items=32, max_tokens=8192, padded=True)
    flat = [i for b in plan for i in b]
    assert sorted(flat) == list(range(1000))
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_padded_limits_hold() -> None:
    rng = random.Random(2)
    lengths = [rng.randint(1, 512) for _ in range(2000)]
    for b in plan_batches(lengths, max_items=32, max_tokens=8192, padded=True):
        longest = max(lengths[i] for i in b)
        assert len(b) <= 32
        if len(b) > 1:
            assert len(b) * longest <= 8192
            assert len(b) * longest**2 <= 8192 * ATTENTION_FACTOR


def test_long_inputs_get_small_batches() -> None:
    sizes = {
        length: len(plan_batches([length] * 64, max_items=32, max_tokens=1024, padded=True)[0])
        for length in (16, 32, 64, 128, 256, 512, 8192)
    }
    assert sizes == {16: 32, 32: 32, 64: 16, 128: 8, 256: 4, 512: 1, 8192: 1}
    # a larger token budget (a GPU's) is still bounded by attention for long inputs
    big = plan_batches([1024] * 64, max_items=64, max_tokens=16384, padded=True)[0]
    assert len(big) == 4


def test_api_batches_count_the_sum_of_tokens() -> None:
    lengths = [100] * 50
    plan = plan_batches(lengths, max_items=1000, max_tokens=1000, padded=False)
    assert [len(b) for b in plan] == [10] * 5
