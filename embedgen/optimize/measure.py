"""Embed the sample with a model the way ``embedgen run`` does, and time it.

The texts are tokenized once, cut to the model's limit, sorted by length and sent in
batches of 32 through :class:`~embedgen.providers.onnx.OnnxProvider`, the provider a
run uses. Speeds are compared by :func:`race`: every runner does a pass in turn, a few
rounds, best pass kept, so a busy machine slows them alike.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from embedgen.models.local import ModelSpec

BATCH_SIZE = 32


class SampleRunner:
    """One model (a spec, or another ONNX file of it) loaded and ready to embed the sample."""

    def __init__(
        self,
        spec: ModelSpec,
        texts: list[str],
        *,
        onnx_path: Path | None = None,
        level: str | None = None,
    ) -> None:
        from embedgen.config import OnnxConfig
        from embedgen.providers.onnx import OnnxProvider

        if onnx_path is not None:
            spec = replace(spec, onnx_path=onnx_path, sha256=None)
        cfg = OnnxConfig(
            device="cpu",
            warmup_batches=0,
            graph_optimization=level or "auto",  # type: ignore[arg-type]
        )
        self.provider = OnnxProvider(spec, cfg)
        self.texts = texts
        tok = self.provider.tokenizer()
        room = self.provider.max_tokens - tok.overhead
        self.ids = [tok.model_inputs(found[:room]) for found, _ in tok.encode_offsets(texts)]
        order = sorted(range(len(texts)), key=lambda i: (len(self.ids[i]), i))
        self.batches = [order[s : s + BATCH_SIZE] for s in range(0, len(order), BATCH_SIZE)]
        self.best_seconds = float("inf")

    def _embed(self, rows: list[int]) -> np.ndarray:
        from embedgen.providers.base import Batch

        batch = Batch(
            texts=[self.texts[i] for i in rows],
            token_counts=[len(self.ids[i]) for i in rows],
            input_ids=[self.ids[i] for i in rows],
        )
        return self.provider.embed_batch(batch).vectors

    def vectors(self) -> np.ndarray:
        """The sample's vectors in input order (this pass is timed too)."""
        out = np.zeros((len(self.texts), self.provider.info.dim), np.float32)
        started = time.perf_counter()
        for rows in self.batches:
            out[rows] = self._embed(rows)
        self.best_seconds = min(self.best_seconds, time.perf_counter() - started)
        return out

    def timed_pass(self) -> None:
        started = time.perf_counter()
        for rows in self.batches:
            self._embed(rows)
        self.best_seconds = min(self.best_seconds, time.perf_counter() - started)

    @property
    def chunks_per_s(self) -> float:
        if self.best_seconds in (0.0, float("inf")):
            return 0.0
        return len(self.texts) / self.best_seconds

    def close(self) -> None:
        self.provider.close()


def race(runners: list[SampleRunner], rounds: int = 3) -> None:
    """A warm-up batch each, then ``rounds`` timed passes taken in turn."""
    for r in runners:
        r._embed(r.batches[len(r.batches) // 2])
    for _ in range(rounds):
        for r in runners:
            r.timed_pass()
