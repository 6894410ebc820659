"""Building the provider (or fallback chain) a run uses, from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedgen.errors import ConfigError

if TYPE_CHECKING:
    from embedgen.config import Config, OnnxConfig
    from embedgen.providers.base import Provider


def build_onnx(cfg: Config, model_cfg: OnnxConfig, name: str) -> Provider:
    from embedgen.models.local import resolve_model
    from embedgen.providers.onnx import OnnxProvider

    spec = resolve_model(model_cfg.model)
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
    )


def build_member(cfg: Config, name: str) -> Provider:
    if name == "local" and name not in cfg.providers:
        return build_onnx(cfg, cfg.model, "local")
    pcfg = cfg.providers.get(name)
    if pcfg is None:
        raise ConfigError(f"run.providers: unknown provider {name!r}")
    if pcfg.kind == "onnx":
        return build_onnx(cfg, pcfg, name)
    from embedgen.providers.api_factory import build_api_provider

    return build_api_provider(name, pcfg)


def build_provider(cfg: Config) -> Provider:
    """The run's provider: one member, or a fallback chain of several."""
    names = cfg.run.providers or ["local"]
    members: list[Provider] = []
    try:
        for name in names:
            members.append(build_member(cfg, name))
    except BaseException:
        for m in members:
            m.close()
        raise
    if len(members) == 1 and members[0].info.kind == "onnx":
        return members[0]
    # Even a single API provider goes in a chain: when its breaker opens, the chain waits
    # for it to half-open once, where a bare provider would fail the run at once.
    from embedgen.providers.chain import FallbackChain

    try:
        return FallbackChain(members, cfg.run.allow_mixed_models)
    except BaseException:
        for m in members:
            m.close()
        raise
