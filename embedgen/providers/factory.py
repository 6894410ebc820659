"""Building one bare provider from the config (the router adds limits and fallback)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedgen.errors import ConfigError

if TYPE_CHECKING:
    from embedgen.config import Config, OnnxConfig
    from embedgen.models.local import ModelSpec
    from embedgen.providers.base import Provider


GPU_DEVICES = ("cuda", "directml")
_GPU_PROVIDERS = ("CUDAExecutionProvider", "DmlExecutionProvider")


def _on_gpu(model_cfg: OnnxConfig) -> bool:
    """Whether the model will run on a GPU (asked for, or ``auto`` with one available)."""
    if model_cfg.device in GPU_DEVICES:
        return True
    if model_cfg.device != "auto":
        return False
    from embedgen.providers.onnx_device import available_providers

    return any(p in available_providers("auto") for p in _GPU_PROVIDERS)


def local_model(model_cfg: OnnxConfig) -> str | None:
    """The model a ``[model]`` table runs: the default's original file on a GPU, since its
    int8 variant is a CPU graph (integer MatMuls)."""
    from embedgen.models.local import DEFAULT_NAMES, ORIGINAL_DEFAULT

    if model_cfg.model in DEFAULT_NAMES and _on_gpu(model_cfg):
        return ORIGINAL_DEFAULT
    return model_cfg.model


def built_model_spec(model_cfg: OnnxConfig) -> ModelSpec | None:
    """The model of ``model_cfg`` when nothing needs building first (the default's variant
    is built), else None; for a run that opens its session early."""
    from embedgen.models.local import built_default_model, names_default, resolve_model

    model = local_model(model_cfg)
    return built_default_model() if names_default(model) else resolve_model(model)


def build_onnx(cfg: Config, model_cfg: OnnxConfig, name: str) -> Provider:
    from embedgen.models.local import resolve_model
    from embedgen.providers.onnx import OnnxProvider

    spec = resolve_model(local_model(model_cfg))
    return OnnxProvider(
        spec,
        model_cfg,
        name=name,
        max_tokens=cfg.run.max_tokens,
        dimensions=cfg.run.dimensions,
        dtype=cfg.run.dtype,
        batch_size=cfg.run.batch_size,
        batch_tokens=cfg.run.batch_tokens,
        sparse=cfg.run.sparse,
        colbert=cfg.run.colbert,
        force_dimensions=cfg.run.force_dimensions,
    )


def is_api(pcfg: Any) -> bool:
    """Whether a ``[providers.NAME]`` table is a hosted API (not a local ONNX model)."""
    return pcfg is not None and pcfg.kind != "onnx"


def build_member(cfg: Config, name: str) -> Provider:
    """The bare provider named ``name`` (``local`` is the ``[model]`` table by default)."""
    if name == "local" and name not in cfg.providers:
        return build_onnx(cfg, cfg.model, "local")
    pcfg = cfg.providers.get(name)
    if pcfg is None:
        raise ConfigError(f"run.providers: unknown provider {name!r}")
    if pcfg.kind == "onnx":
        return build_onnx(cfg, pcfg, name)
    from embedgen.providers.api_factory import build_api_provider
    from embedgen.providers.truncation import check_api_dimensions

    check_api_dimensions(name, pcfg, force=cfg.run.force_dimensions)
    return build_api_provider(name, pcfg, output_dtype=native_request(cfg))


def native_request(cfg: Config) -> str | None:
    """The output type to ask APIs for: a chain of one provider only, so a fallback member's
    float vectors are never written as if they were an API's int8 codes."""
    return cfg.run.vector_dtype if len(cfg.run.providers) <= 1 else None
