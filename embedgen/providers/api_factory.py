"""Building a hosted API provider from its config: key, protocol, reliability layer."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from embedgen.errors import ConfigError
from embedgen.redact import Secret

if TYPE_CHECKING:
    from embedgen.config import ApiConfigBase
    from embedgen.providers.http_base import HttpProvider
    from embedgen.providers.reliable import ReliableProvider


def read_key(name: str, cfg: ApiConfigBase) -> Secret | None:
    """The key from ``cfg.api_key_env``; ConfigError naming the variable when it is unset."""
    var = cfg.api_key_env
    if var is None:
        return None
    value = os.environ.get(var, "").strip()
    if not value:
        raise ConfigError(
            f"providers.{name}: the API key variable {var} is not set; "
            f"export {var}=... (keys are never read from the config file)"
        )
    return Secret(value)


def provider_class(name: str, cfg: ApiConfigBase) -> type[HttpProvider]:
    """The HTTP provider class that speaks ``cfg.kind``'s protocol."""
    from embedgen.providers.cohere import CohereProvider
    from embedgen.providers.openai_api import AzureProvider, OpenAIProvider
    from embedgen.providers.voyage import VoyageProvider

    classes: dict[str, type[HttpProvider]] = {
        "openai": OpenAIProvider,
        "openai_compatible": OpenAIProvider,
        "mistral": OpenAIProvider,
        "azure": AzureProvider,
        "voyage": VoyageProvider,
        "cohere": CohereProvider,
    }
    cls = classes.get(cfg.kind)
    if cls is None:
        raise ConfigError(f"providers.{name}.kind: {cfg.kind!r} is not a hosted API kind")
    return cls


def build_api_provider(name: str, cfg: ApiConfigBase) -> ReliableProvider:
    """The provider named ``name``, wrapped in limits, retries and a circuit breaker."""
    from embedgen.providers.reliable import Reliability, ReliableProvider

    inner = provider_class(name, cfg)(name, cfg, read_key(name, cfg))
    settings = Reliability(
        rpm=cfg.rpm,
        tpm=cfg.tpm,
        max_retries=cfg.max_retries,
        backoff_base=cfg.backoff_base,
        backoff_max=cfg.backoff_max,
        failure_threshold=cfg.failure_threshold,
        recovery_timeout=cfg.recovery_timeout,
        success_threshold=cfg.success_threshold,
        max_concurrency=cfg.max_concurrency,
    )
    return ReliableProvider(inner, settings)
