"""The default model on a GPU: its int8 variant is a CPU graph, so GPUs get the original."""

from __future__ import annotations

import pytest

from embedgen.config import load
from embedgen.providers.factory import build_onnx

VARIANT, PACKAGED = "all-minilm-l6-v2-int8", "all-minilm-l6-v2-int8-weights"


@pytest.mark.parametrize(
    ("device", "available", "model"),
    [
        ("cpu", ["CPUExecutionProvider"], VARIANT),
        ("auto", ["CPUExecutionProvider"], VARIANT),
        ("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], PACKAGED),
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], PACKAGED),
        ("directml", ["DmlExecutionProvider", "CPUExecutionProvider"], PACKAGED),
    ],
)
def test_the_default_runs_its_int8_variant_on_cpu_only(
    device: str, available: list[str], model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    from embedgen.providers import onnx_device

    monkeypatch.setattr(onnx_device, "may_offer_gpu", lambda: True)  # as if a GPU build
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(available))
    cfg = load(None)
    cfg.model.device = device  # type: ignore[assignment]
    provider = build_onnx(cfg, cfg.model, "local")  # no session yet: nothing runs on the GPU
    assert provider.info.model == model
