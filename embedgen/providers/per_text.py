"""Each text alone, calls side by side: how a model that quantizes per call runs on a CPU.

A model with ``DynamicQuantizeLinear`` (or its fused forms) takes its int8 scales over the
whole call, so in a shared padded batch a text's vector depends on its neighbours (cosine
~0.997 between two batchings). Run alone, a text's vector is a function of the text, the
same bits in any batch, thread count or run. On a CPU it is also faster: nothing is padded
and no call waits for a second intra-op thread (MiniLM int8, 2 cores: 2.2x the fp32
batched loop in one process against 1.9x batched; 3.6x against 2.3x at 256 tokens).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.errors import ModelError
from embedgen.providers.base import EmbedResult


def runs_per_text(chosen: bool | None, device: str, onnx_path: Path) -> bool:
    """``one_text_per_call`` when set; else whether the model quantizes per call, on a CPU."""
    from embedgen.models.onnx_info import quantizes_per_call

    if chosen is not None:
        return chosen
    if device != "cpu":
        return False  # a GPU wants large batches
    try:
        return quantizes_per_call(onnx_path)
    except ModelError:
        return False  # loading it says what is wrong with the file


def cpu_threads(configured: int) -> int:
    """``num_threads`` when set, else the CPUs this process may run on."""
    if configured:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class PerText:
    """Worker threads that run one call per text and join the results in order."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="embedgen-onnx")

    def run(self, rows: Sequence[Any], call: Callable[[list[Any]], EmbedResult]) -> EmbedResult:
        if len(rows) < 2:
            return call(list(rows))
        parts = list(self._pool.map(lambda row: call([row]), rows))
        sparse = [w for p in parts for w in p.sparse or ()]
        colbert = [c for p in parts for c in p.colbert or ()]
        return EmbedResult(
            np.concatenate([p.vectors for p in parts]),
            sparse=None if parts[0].sparse is None else sparse,
            colbert=None if parts[0].colbert is None else colbert,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
