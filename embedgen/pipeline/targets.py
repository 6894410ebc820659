"""What ``cost-estimate`` prices: providers named in the config or given as ``kind:model``.

An API provider is built offline: its metadata (limits, price, fingerprint) and its
tokenizer come from the config alone, with no key and no HTTP client (the client is
created on the first request, which an estimate never sends). A local model is loaded,
because its fingerprint hashes the ONNX file and its speed is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embedgen.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from embedgen.config import Config
    from embedgen.providers.base import Provider, ProviderInfo, TextTokenizer

DEFAULT_SPECS = ("openai:text-embedding-3-small", "voyage:voyage-3", "local:default")
"""Priced when neither ``--provider`` nor a config names any provider."""

_LOCAL_KINDS = ("local", "onnx")


@dataclass
class Target:
    """One provider to price, ready to tokenize."""

    name: str
    info: ProviderInfo
    tokenizer: TextTokenizer
    chunk_tokens: int
    """Chunk size in tokens as ``run`` would use (special tokens included)."""
    overlap: int
    rpm: int | None = None
    tpm: int | None = None
    provider: Provider | None = None
    """The loaded local model, for the speed warm-up; None for APIs."""
    batch_usd_per_mtok: float | None = None

    @property
    def local(self) -> bool:
        return self.info.kind == "onnx"

    @property
    def token_basis(self) -> str:
        """How tokens are counted: exact with the provider's tokenizer, or an estimate."""
        kind = type(self.tokenizer).__name__
        if kind == "EstimateTokenizer":
            return "estimate (no public tokenizer; counted high)"
        name = getattr(self.tokenizer, "name", None)
        if kind == "BpeTokenizer" and name:
            return f"exact ({name})"
        return "exact (tokenizer.json)"


def provider_configs(cfg: Config, specs: list[str]) -> list[tuple[str, Any]]:
    """(name, provider config) for each spec; the config's providers when none is given."""
    if not specs:
        specs = list(cfg.run.providers) or list(cfg.providers) or list(DEFAULT_SPECS)
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for spec in specs:
        name, pcfg = _one(cfg, spec.strip())
        if name in seen:
            continue
        seen.add(name)
        out.append((name, pcfg))
    return out


def _one(cfg: Config, spec: str) -> tuple[str, Any]:
    if spec in cfg.providers:
        return spec, cfg.providers[spec]
    if spec == "local":
        return "local", cfg.model
    kind, sep, model = spec.partition(":")
    if not sep or not model:
        have = ", ".join(["local", *cfg.providers]) or "none"
        raise UsageError(
            f"--provider {spec!r}: expected a provider of the config ({have}) or KIND:MODEL, "
            "e.g. openai:text-embedding-3-small, voyage:voyage-3, local:default"
        )
    if kind in _LOCAL_KINDS:
        local = cfg.model.model_copy(update={"model": None if model == "default" else model})
        return spec, local
    from pydantic import TypeAdapter, ValidationError

    from embedgen.config import ProviderConfig
    from embedgen.config import describe as _describe

    try:
        pcfg = TypeAdapter(ProviderConfig).validate_python({"kind": kind, "model": model})
    except ValidationError as exc:
        err = exc.errors()[0]
        err["loc"] = (f"--provider {spec}", *err["loc"][1:])
        raise ConfigError(_describe(err) + "; describe it in a [providers.NAME] table") from None
    return spec, pcfg


def build_target(cfg: Config, name: str, pcfg: Any) -> Target:
    """Metadata and tokenizer of one provider, without network or API key."""
    from embedgen.batch.prepass import batch_price
    from embedgen.config.catalog import BATCH_KINDS

    if pcfg.kind == "onnx":
        from embedgen.providers.factory import build_onnx

        provider = build_onnx(cfg, pcfg, name)
        info = provider.info
        return Target(name, info, provider.tokenizer(), _chunk_tokens(cfg, info), cfg.run.overlap,
                      provider=provider)  # fmt: skip
    from embedgen.providers.factory import native_request

    inner = offline_api_provider(name, pcfg, native_request(cfg))
    info = inner.info
    return Target(
        name,
        info,
        inner.tokenizer(),
        _chunk_tokens(cfg, info),
        cfg.run.overlap,
        rpm=pcfg.rpm,
        tpm=pcfg.tpm,
        batch_usd_per_mtok=batch_price(pcfg) if pcfg.kind in BATCH_KINDS else None,
    )


def offline_api_provider(name: str, pcfg: Any, output_dtype: str | None = None) -> Provider:
    """The API provider of ``pcfg`` with no key: metadata and tokenizer, never a request."""
    from embedgen.providers.api_factory import provider_class

    return provider_class(name, pcfg)(name, pcfg, None, output_dtype=output_dtype)


def _chunk_tokens(cfg: Config, info: ProviderInfo) -> int:
    """The chunk size ``run`` uses: ``--max-tokens`` capped at the model's limit."""
    want = cfg.run.max_tokens or info.max_tokens
    return min(want, info.max_tokens)
