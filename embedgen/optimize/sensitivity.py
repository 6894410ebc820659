"""How much error each MatMul's int8 quantization adds, measured on the sample.

For every MatMul with constant weights, its real input activations on the sample are
collected batch by batch (from the graph about to be quantized, smoothing included)
and multiplied twice in numpy: in float, and the way onnxruntime's dynamic
quantization does it (activation: uint8, asymmetric, one scale per batch tensor;
weights: int8, symmetric, per output channel). The score is the relative squared
error of the product, summed over the sample; the highest are kept in fp32 first.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from embedgen.models.calibrate import Feeds, scan_activations


def _quant_activation(x: np.ndarray) -> np.ndarray:
    """Dequantized ``DynamicQuantizeLinear(x)``: uint8, range widened to include 0."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


def _quant_weight(w: np.ndarray, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """Dequantized symmetric int8 weights (7-bit with ``reduce_range``)."""
    qmax = 63.0 if reduce_range else 127.0
    amax = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return (np.clip(np.rint(w / scale), -qmax, qmax) * scale).astype(np.float32)


def matmul_sensitivity(
    model: object,
    batches: Iterable[Feeds],
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
) -> dict[str, float]:
    """Node name -> relative squared error of its int8 product on the sample."""
    from onnx import numpy_helper

    from embedgen.models.variants import weight_matmuls

    nodes = weight_matmuls(model)  # type: ignore[arg-type]
    inits = {i.name: i for i in model.graph.initializer}  # type: ignore[attr-defined]
    weights = {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
    qweights = {k: _quant_weight(w, per_channel, reduce_range) for k, w in weights.items()}
    by_input: dict[str, list[str]] = {}
    for n in nodes:
        by_input.setdefault(n.input[0], []).append(n.name)
    err = dict.fromkeys(weights, 0.0)
    signal = dict.fromkeys(weights, 0.0)

    def visit(_feeds: Feeds, values: dict[str, np.ndarray]) -> None:
        for act, x in values.items():
            x2 = x.reshape(-1, x.shape[-1]).astype(np.float32)
            xq = _quant_activation(x2)
            for name in by_input[act]:
                y = x2 @ weights[name]
                yq = xq @ qweights[name]
                err[name] += float(np.square(yq - y).sum())
                signal[name] += float(np.square(y).sum())

    scan_activations(model, batches, sorted(by_input), visit)  # type: ignore[arg-type]
    return {k: err[k] / signal[k] if signal[k] > 0 else 0.0 for k in weights}


def most_sensitive(scores: dict[str, float], count: int) -> tuple[str, ...]:
    """The ``count`` highest-scoring node names, in graph order of the scores dict."""
    ranked = sorted(scores, key=lambda k: (-scores[k], k))[:count]
    return tuple(k for k in scores if k in ranked)
