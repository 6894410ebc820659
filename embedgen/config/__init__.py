"""Configuration: TOML files validated on load, with command-line overrides.

- :mod:`~embedgen.config.schema`: the tables (``[run]``, ``[model]``, ``[providers.NAME]``,
  ``[budget]``, ``[engine]``) as strict models; :mod:`~embedgen.config.api` the hosted
  provider kinds; :mod:`~embedgen.config.windows` the Windows deployment layout.
- :mod:`~embedgen.config.catalog`: the one catalog of hosted models (dimension, limits,
  price, tokenizer) and provider kinds.
- :mod:`~embedgen.config.load`: loading, overrides and key-path error messages.

Unknown keys and wrong types are :class:`~embedgen.errors.ConfigError` naming the key
path; enumerated values are case-insensitive.
"""

from __future__ import annotations

from embedgen.config.api import (
    ApiConfig,
    ApiConfigBase,
    AzureConfig,
    CohereConfig,
    MistralConfig,
    OpenAICompatibleConfig,
    OpenAIConfig,
    VoyageConfig,
)
from embedgen.config.base import Strict
from embedgen.config.load import apply_overrides, describe, load, validate
from embedgen.config.schema import (
    BudgetConfig,
    Config,
    EngineConfig,
    OnnxConfig,
    OutputConfig,
    ProviderConfig,
    RunConfig,
)
from embedgen.config.windows import DirectMLTable, PerformanceTable, WindowsModelTable

__all__ = [
    "ApiConfig",
    "ApiConfigBase",
    "AzureConfig",
    "BudgetConfig",
    "CohereConfig",
    "Config",
    "DirectMLTable",
    "EngineConfig",
    "MistralConfig",
    "OnnxConfig",
    "OpenAICompatibleConfig",
    "OpenAIConfig",
    "OutputConfig",
    "PerformanceTable",
    "ProviderConfig",
    "RunConfig",
    "Strict",
    "VoyageConfig",
    "WindowsModelTable",
    "apply_overrides",
    "describe",
    "load",
    "validate",
]
