"""Find the fastest int8 variant of a model that stays within a fidelity floor.

Candidates are tried fastest first and the first one that meets the floor is kept,
so the choice depends only on the model, the sample and the floor (the same inputs
give the same file):

1. every MatMul with constant weights in int8 (dynamic quantization, per-channel
   weights, ``reduce_range`` only on CPUs without VNNI);
2. the same with activation outliers smoothed into the weights (SmoothQuant, a few
   strengths; the best on the sample goes on);
3. the best of those with the 1, 2, 4, ... MatMuls that lose most to int8 on the
   sample (see :mod:`embedgen.optimize.sensitivity`) kept in fp32.

Each candidate embeds the sample through the ONNX provider; its vectors are compared
with the original model's (:mod:`embedgen.optimize.fidelity`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from embedgen.errors import ModelError
from embedgen.models.local import ModelSpec
from embedgen.models.variants import QuantSettings
from embedgen.optimize.fidelity import Fidelity
from embedgen.optimize.measure import SampleRunner
from embedgen.optimize.sample import Sample

log = logging.getLogger("embedgen")

SMOOTH_ALPHAS = (0.8, 0.6, 0.9)
FP32_STEPS = (1, 2, 4, 8, 16)
LEVELS = ("basic",)
"""Levels raced for the kept variant. Variants are saved with their fusions applied
(:func:`embedgen.models.variants.bake`); "all" would add the one left out on purpose."""
RACE_ROUNDS = 3


@dataclass
class Candidate:
    """One variant tried: its settings and what it measured."""

    label: str
    settings: QuantSettings
    fidelity: Fidelity
    chunks_per_s: float
    meets: bool
    path: Path = field(repr=False)
    level: str = "basic"

    def to_dict(self, original_chunks_per_s: float) -> dict[str, Any]:
        return {
            "label": self.label,
            "settings": self.settings.to_dict() | {"graph_optimization": self.level},
            "fidelity": self.fidelity.to_dict(),
            "chunks_per_s": round(self.chunks_per_s, 1),
            "speedup": round(self.chunks_per_s / original_chunks_per_s, 3)
            if original_chunks_per_s
            else None,
            "meets_floor": self.meets,
        }


@dataclass
class Search:
    """What :func:`search` found: every candidate, and the one kept (None: floor not met)."""

    source: ModelSpec
    sample: Sample
    min_cos: float
    min_worst: float
    original_chunks_per_s: float
    candidates: list[Candidate]
    chosen: Candidate | None
    workdir: Path
    dim: int

    @property
    def best(self) -> Candidate | None:
        """The candidate closest to the original (by mean cosine), met or not."""
        return max(self.candidates, key=lambda c: c.fidelity.mean, default=None)


Progress = Callable[[str], None]


def _is_quantized(model: Any) -> bool:
    ops = {n.op_type for n in model.graph.node}
    quantized = {
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QLinearMatMul",
        "QAttention",
        "DequantizeLinear",
    }
    return bool(ops & quantized)


def search(
    spec: ModelSpec,
    sample: Sample,
    *,
    min_cos: float,
    min_worst: float,
    workdir: Path | None = None,
    progress: Progress | None = None,
) -> Search:
    """Try candidates fastest first; keep the first that meets both floors."""
    from embedgen.models.calibrate import activation_absmax, sample_feeds
    from embedgen.models.variants import (
        build_variant,
        default_settings,
        load,
        simplify,
        smoothing_groups,
    )
    from embedgen.optimize.fidelity import compare
    from embedgen.optimize.sensitivity import matmul_sensitivity, most_sensitive

    say = progress or (lambda _msg: None)
    work = workdir or Path(tempfile.mkdtemp(prefix="embedgen-optimize-"))
    model = load(spec.onnx_path)
    if _is_quantized(model):
        raise ModelError(f"{spec.onnx_path}: already quantized; optimize its float original")
    model = simplify(model)
    if not smoothing_groups(model):
        raise ModelError(f"{spec.onnx_path}: no MatMul with constant weights to quantize")

    say(f"measuring the original on {sample.describe()}")
    original = SampleRunner(spec, sample.texts)
    reference = original.vectors()
    original.timed_pass()
    feeds = sample_feeds(
        spec.tokenizer_path, sample.texts, max_tokens=spec.max_tokens, prefix=spec.document_prefix
    )
    absmax: dict[str, Any] | None = None
    base = default_settings()
    candidates: list[Candidate] = []

    def attempt(label: str, settings: QuantSettings) -> Candidate:
        nonlocal absmax
        if settings.smooth_alpha is not None and absmax is None:
            absmax = activation_absmax(model, feeds, sorted(smoothing_groups(model)))
        path = work / f"candidate-{len(candidates)}.onnx"
        build_variant(model, path, settings, absmax)
        runner = SampleRunner(spec, sample.texts, onnx_path=path, level=LEVELS[0])
        try:
            fid = compare(reference, runner.vectors())
            runner.timed_pass()
        finally:
            runner.close()
        cand = Candidate(
            label, settings, fid, runner.chunks_per_s, fid.meets(min_cos, min_worst), path
        )
        candidates.append(cand)
        say(
            f"{label}: mean {fid.mean:.5f}, min {fid.min:.5f}, "
            f"{runner.chunks_per_s / original.chunks_per_s:.2f}x"
            + (" (meets the floor)" if cand.meets else "")
        )
        return cand

    def done(chosen: Candidate | None) -> Search:
        speed = original.chunks_per_s
        if chosen is not None:
            say("timing the kept variant against the original")
            picked, speed = _pick_level(spec, sample, chosen, original)
            candidates[candidates.index(chosen)] = chosen = picked
        original.close()
        dim = int(reference.shape[1])
        return Search(spec, sample, min_cos, min_worst, speed, candidates, chosen, work, dim)

    if (c := attempt("int8", base)).meets:
        return done(c)
    best = c
    for alpha in SMOOTH_ALPHAS:
        c = attempt(f"int8 smooth {alpha:g}", replace(base, smooth_alpha=alpha))
        if c.meets:
            return done(c)
        if c.fidelity.mean > best.fidelity.mean:
            best = c
    scored = model
    if best.settings.smooth_alpha is not None:
        from embedgen.models.variants import smooth

        assert absmax is not None
        scored = smooth(model, absmax, best.settings.smooth_alpha)
    say("measuring each MatMul's int8 error on the sample")
    scores = matmul_sensitivity(
        scored, feeds, per_channel=base.per_channel, reduce_range=base.reduce_range
    )
    for count in FP32_STEPS:
        if count >= len(scores):
            break
        keep = most_sensitive(scores, count)
        # the smoothed graph names its MatMuls as the original does
        c = attempt(f"{best.label} + {count} fp32", replace(best.settings, fp32_nodes=keep))
        if c.meets:
            return done(c)
    return done(None)


def _pick_level(
    spec: ModelSpec, sample: Sample, chosen: Candidate, original: SampleRunner
) -> tuple[Candidate, float]:
    """Race the kept variant at each optimisation level against the original; keep the faster.

    Returns the candidate with its level and speed, and the original's speed in the race.
    """
    from embedgen.optimize.measure import race

    runners = {level: SampleRunner(spec, sample.texts, onnx_path=chosen.path, level=level)
               for level in LEVELS}  # fmt: skip
    try:
        race([original, *runners.values()], rounds=RACE_ROUNDS)
    finally:
        for r in runners.values():
            r.close()
    level = max(LEVELS, key=lambda k: runners[k].chunks_per_s)
    return replace(chosen, level=level, chunks_per_s=runners[level].chunks_per_s), (
        original.chunks_per_s
    )
