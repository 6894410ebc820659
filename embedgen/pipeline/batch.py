"""Cutting length-sorted batches under an item limit and a token budget."""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    lengths: Sequence[int], *, max_items: int, max_tokens: int, padded: bool
) -> list[list[int]]:
    """Index lists into ``lengths``, sorted by length, each within the limits.

    ``padded``: a batch costs ``items × longest`` (a local model pads to the longest
    input); otherwise it costs the sum of lengths (an API bills tokens).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        length = lengths[i]
        cost = (len(current) + 1) * length if padded else total + length
        if current and (len(current) >= max_items or cost > max_tokens):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += length
    if current:
        batches.append(current)
    return batches
