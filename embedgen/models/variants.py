"""Faster variants of an ONNX model: pure graph work with onnx and onnxruntime.quantization.

A variant is made from a float graph in a few steps, each deterministic (the same
input and settings give the same bytes):

- :func:`~embedgen.models.simplify.simplify` folds int8-times-scale weights into fp32,
  fuses GELU and drops dead NaN guards (:mod:`embedgen.models.simplify`);
- :func:`smooth` moves activation outliers into the weights (SmoothQuant): the input of
  each group of MatMuls sharing an activation is divided per channel by ``s`` (one
  ``Mul``) and the weights' rows multiplied by it, so the product is unchanged while the
  per-tensor int8 range of the activation no longer depends on a few huge channels;
- :func:`quantize` runs onnxruntime's quantization on the MatMuls with constant weights
  (int8 weights, per output channel by default; ``reduce_range`` only where the CPU lacks
  VNNI), leaving the listed nodes in fp32. Activations are quantized dynamically (ranges
  per batch) or statically (ranges calibrated on a sample, so rows do not affect each
  other);
- :func:`bake` saves the graph with onnxruntime's CPU fusions applied, less the one that
  slows it down, to be run at optimisation level "basic".

Nothing here imports a provider: running sessions for statistics is in
:mod:`embedgen.models.calibrate`.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedgen.errors import ModelError
from embedgen.models.simplify import (
    drop_nan_guards,
    fold_constants,
    fuse_gelu,
    initializer_array,
    simplify,
)

if TYPE_CHECKING:
    import onnx

__all__ = [
    "QuantSettings",
    "bake",
    "build_variant",
    "default_settings",
    "drop_nan_guards",
    "fold_constants",
    "fuse_gelu",
    "load",
    "quantize",
    "save",
    "simplify",
    "smooth",
    "weight_matmuls",
]

LARGE_MODEL_BYTES = 1_800_000_000
"""Above this size a model is saved with external data (protobuf's 2 GB limit)."""


@dataclass(frozen=True, kw_only=True)
class QuantSettings:
    """How a variant is quantized; recorded in its manifest."""

    per_channel: bool = True
    reduce_range: bool = False
    smooth_alpha: float | None = None
    """SmoothQuant migration strength (0..1); None: no smoothing."""
    fp32_nodes: tuple[str, ...] = field(default_factory=tuple)
    """MatMul nodes kept in fp32."""
    activations: str = "dynamic"
    """``dynamic``: int8 ranges of activations measured per batch, so a vector depends a
    little on its batch; ``static``: ranges calibrated once on a sample and fixed in the
    graph, so the same text gives the same vector in any batch."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fp32_nodes"] = list(self.fp32_nodes)
        return data

    def describe(self) -> str:
        """A short label, e.g. ``int8 per-channel, smooth 0.8, 2 fp32``."""
        parts = ["int8 " + ("per-channel" if self.per_channel else "per-tensor")]
        if self.activations != "dynamic":
            parts.append(f"{self.activations} activations")
        if self.reduce_range:
            parts.append("reduce-range")
        if self.smooth_alpha is not None:
            parts.append(f"smooth {self.smooth_alpha:g}")
        if self.fp32_nodes:
            parts.append(f"{len(self.fp32_nodes)} fp32")
        return ", ".join(parts)


def cpu_has_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (VNNI, AMX, or Arm's dot product)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True  # Arm and others: onnxruntime's int8 kernels do not saturate there
    import importlib

    features: dict[str, bool] = {}
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            features = dict(importlib.import_module(module).__cpu_features__)
            break
        except (ImportError, AttributeError):  # numpy 1 has no _core; a future one may differ
            continue
    if any(v for k, v in features.items() if "VNNI" in k or k.startswith("AMX")):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text("utf-8", "replace")
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def default_settings(**changes: Any) -> QuantSettings:
    """Per-channel int8 with ``reduce_range`` only on x86 CPUs without VNNI."""
    base: dict[str, Any] = {"per_channel": True, "reduce_range": not cpu_has_vnni()}
    return QuantSettings(**(base | changes))


def load(path: Path) -> onnx.ModelProto:
    """Load an ONNX file (with its external data), or raise :class:`ModelError`."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValidationError...
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from None


def save(model: onnx.ModelProto, path: Path) -> None:
    """Save ``model``; large ones with their weights in ``<name>.data`` beside it."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > LARGE_MODEL_BYTES
    onnx.save(
        model,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=path.name + ".data" if large else None,
    )


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second input is a 2-D float initializer (the quantizable ones)."""
    from onnx import TensorProto

    inits = {
        i.name
        for i in model.graph.initializer
        if i.data_type == TensorProto.FLOAT and len(i.dims) == 2
    }
    found = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    unnamed = [n for n in found if not n.name]
    if unnamed:
        raise ModelError("the graph has unnamed MatMul nodes; name them before quantizing")
    return found


def smoothing_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Activation name -> the weight MatMuls that read it, in graph order."""
    groups: dict[str, list[str]] = {}
    for node in weight_matmuls(model):
        groups.setdefault(node.input[0], []).append(node.name)
    return groups


def smooth(
    model: onnx.ModelProto,
    absmax: Mapping[str, np.ndarray],
    alpha: float,
) -> onnx.ModelProto:
    """A copy with SmoothQuant scales ``s = a^alpha / w^(1-alpha)`` per input channel.

    ``absmax`` maps each MatMul input (activation) name to its per-channel absolute
    maximum on a sample (see :func:`embedgen.models.calibrate.activation_absmax`);
    activations without statistics are left alone.
    """
    import onnx
    from onnx import helper, numpy_helper

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"smoothing alpha must be between 0 and 1, got {alpha}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = {n.name: n for n in weight_matmuls(out)}
    muls: dict[str, onnx.NodeProto] = {}
    for act, members in smoothing_groups(out).items():
        if act not in absmax:
            continue
        weights = [initializer_array(inits[nodes[m].input[1]]) for m in members]
        a = np.asarray(absmax[act], dtype=np.float64)
        if a.shape != (weights[0].shape[0],):
            raise ModelError(f"statistics for {act} have shape {a.shape}, expected one per row")
        w = np.max([np.abs(x).max(axis=1) for x in weights], axis=0).astype(np.float64)
        s = np.maximum(a, 1e-5) ** alpha / np.maximum(w, 1e-5) ** (1.0 - alpha)
        s = np.clip(s, 1e-3, 1e3)
        # A power-of-two grid keeps the result identical when statistics differ in the
        # last digits (another CPU's kernels), and the division by s exact.
        s = np.exp2(np.round(np.log2(s) * 8) / 8)
        scaled_name = f"{act}_smoothed"
        inv = numpy_helper.from_array((1.0 / s).astype(np.float32), f"{act}_smooth_inv")
        graph.initializer.append(inv)
        muls[members[0]] = helper.make_node(
            "Mul", [act, inv.name], [scaled_name], name=f"{act}_smooth"
        )
        for m, weight in zip(members, weights):
            init = inits[nodes[m].input[1]]
            scaled = (weight.astype(np.float64) * s[:, None]).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(scaled, init.name))
            nodes[m].input[0] = scaled_name
    ordered = []
    for node in graph.node:
        if node.name in muls:
            ordered.append(muls[node.name])
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    return out


def quantize(
    model: onnx.ModelProto,
    out: Path,
    settings: QuantSettings,
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> None:
    """int8 quantization of the weight MatMuls (``settings.fp32_nodes`` excluded).

    Static activations need ``calibration``: input batches whose activation ranges
    (min/max) are fixed into the graph.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    known = [n.name for n in weight_matmuls(model)]
    unknown = sorted(set(settings.fp32_nodes) - set(known))
    if unknown:
        raise ModelError(f"no quantizable MatMul named {unknown[0]!r} in the graph")
    if settings.activations not in ("dynamic", "static"):
        raise ValueError(f"activations must be dynamic or static, got {settings.activations!r}")
    if settings.activations == "static" and calibration is None:
        raise ValueError("static activations need calibration batches")
    large = model.ByteSize() > LARGE_MODEL_BYTES
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice at WARNING
    try:
        with tempfile.TemporaryDirectory(prefix="embedgen-quant-") as tmp:
            src = Path(tmp) / "source.onnx"
            save(model, src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if settings.activations == "static" and calibration is not None:
                wanted = [n for n in known if n not in settings.fp32_nodes]
                _quantize_static(src, out, settings, wanted, calibration, large)
                return
            quantize_dynamic(
                src,
                out,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=list(settings.fp32_nodes),
                use_external_data_format=large,
                extra_options={"MatMulConstBOnly": True},
            )
    finally:
        logging.getLogger().setLevel(quiet)


def _quantize_static(
    src: Path,
    out: Path,
    settings: QuantSettings,
    nodes: list[str],
    calibration: Iterable[Mapping[str, np.ndarray]],
    large: bool,
) -> None:
    """QDQ around ``nodes`` with activation ranges from ``calibration`` (min/max).

    Only the weight MatMuls named are quantized (their outputs stay float), which the
    CPU provider runs as ``QuantizeLinear`` + ``MatMulIntegerToFloat``: every row is
    quantized with the same fixed scale, so a row's result does not depend on the others.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = iter(calibration)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else dict(batch)

    quantize_static(
        src,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=large,
        extra_options={"MatMulConstBOnly": True},
    )


UNFUSED = ("SkipLayerNormFusion",)
"""onnxruntime fusions left out when baking: its fused SkipLayerNormalization ran the int8
MiniLM graph about 1.8x slower than LayerNormalization + Add (onnxruntime 1.32, CPU)."""


def bake(src: Path, out: Path) -> None:
    """Save ``src`` with onnxruntime's extended CPU fusions applied, except :data:`UNFUSED`.

    The fused graph (``DynamicQuantizeMatMul``, ``MatMulIntegerToFloat``, ``FusedMatMul``
    ...) then runs at level "basic", which fuses nothing more. One thread, so the file
    does not depend on how the work was split.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out)
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if src.with_name(src.name + ".data").exists() or src.stat().st_size > LARGE_MODEL_BYTES:
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", out.name + ".data"
        )
    try:
        ort.InferenceSession(
            str(src), so, providers=["CPUExecutionProvider"], disabled_optimizers=list(UNFUSED)
        )
    except Exception as exc:  # onnxruntime's own error types
        raise ModelError(f"onnxruntime cannot load the quantized graph: {exc}") from None


def build_variant(
    source: onnx.ModelProto,
    out: Path,
    settings: QuantSettings,
    absmax: Mapping[str, np.ndarray] | None = None,
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> None:
    """Smooth (when ``settings.smooth_alpha`` is set), quantize and bake ``source`` into ``out``.

    The result is meant to run at graph optimisation level "basic" (see :func:`bake`).
    ``calibration`` (input batches) is needed for static activations.
    """
    model = source
    if settings.smooth_alpha is not None:
        if absmax is None:
            raise ValueError("smoothing needs activation statistics")
        model = smooth(model, absmax, settings.smooth_alpha)
    with tempfile.TemporaryDirectory(prefix="embedgen-variant-") as tmp:
        quantized = Path(tmp) / "quantized.onnx"
        quantize(model, quantized, settings, calibration)
        out.parent.mkdir(parents=True, exist_ok=True)
        bake(quantized, out)
