"""Cutting length-sorted batches under an item limit and a token budget."""

from __future__ import annotations

from collections.abc import Sequence

ATTENTION_FACTOR = 256
"""A padded batch may hold ``max_tokens × ATTENTION_FACTOR`` in ``items × longest²``.

Attention memory and time grow with the square of the input length, so long inputs go
in smaller batches: with the CPU default of 1,024 padded tokens, 4 inputs of 256 tokens
and 1 of 512 or more. This keeps the peak memory of a run from depending on the longest
inputs of its corpus.
"""


def plan_batches(
    lengths: Sequence[int], *, max_items: int, max_tokens: int, padded: bool
) -> list[list[int]]:
    """Index lists into ``lengths``, sorted by length, each within the limits.

    ``padded``: a batch costs ``items × longest`` tokens and ``items × longest²`` attention
    (a local model pads to the longest input); otherwise it costs the sum of lengths (an API
    bills tokens). A single input longer than the budget still gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    attention = max_tokens * ATTENTION_FACTOR
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        length = lengths[i]
        n = len(current) + 1
        if padded:
            over = n * length > max_tokens or n * length * length > attention
        else:
            over = total + length > max_tokens
        if current and (len(current) >= max_items or over):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += length
    if current:
        batches.append(current)
    return batches
