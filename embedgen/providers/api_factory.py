"""Building a hosted API provider from its config: key and protocol."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from embedgen.errors import ConfigError
from embedgen.redact import Secret, header_problem

if TYPE_CHECKING:
    from embedgen.config import ApiConfigBase
    from embedgen.providers.http_base import HttpProvider


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
    key = Secret(value)  # registered for redaction even when it is refused below
    problem = header_problem(value)
    if problem is not None:
        raise ConfigError(
            f"providers.{name}: the API key in {var} cannot be sent in an HTTP header "
            f"({problem}); export {var} again with the key exactly as the provider issued it"
        )
    return key


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


def build_api_provider(
    name: str, cfg: ApiConfigBase, *, output_dtype: str | None = None
) -> HttpProvider:
    """The bare HTTP provider named ``name`` (the router adds limits, retries and a breaker).

    ``output_dtype`` (the run's ``--vector-dtype``) is asked of APIs that answer in it.
    """
    cls = provider_class(name, cfg)
    return cls(name, cfg, read_key(name, cfg), output_dtype=output_dtype)
