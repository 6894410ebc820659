"""Config models of the hosted API providers (``[providers.NAME]`` with ``kind = ...``).

Every kind shares the reliability settings (limits, retries, breaker) of
:class:`ApiConfigBase`; each kind adds its own defaults and protocol options. Keys
are never in the file: ``api_key_env`` names the environment variable that holds one.
Dimensions, limits, prices and endpoints come from :mod:`embedgen.config.catalog`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from embedgen.config.base import Strict, lower
from embedgen.config.catalog import BATCH_KINDS, KINDS, HostedModel, list_price, model_facts

Mode = Annotated[Literal["sync", "batch"], BeforeValidator(lower)]


class ApiConfigBase(Strict):
    """Settings every hosted provider shares."""

    kind: str
    api_key_env: str | None = None
    """Environment variable holding the API key (never the key itself)."""
    model: str
    base_url: str | None = None
    mode: Mode = "sync"
    """``sync`` requests, or ``batch``: the provider's asynchronous batch API (BATCH_KINDS)."""
    batch_price_per_mtok: float | None = Field(default=None, ge=0)
    """``mode = "batch"``: USD per 1M tokens; default: the catalog's batch price, else half
    of ``price_per_mtok`` (OpenAI and Azure OpenAI bill batches at half the sync price)."""
    batch_poll: float = Field(default=30.0, gt=0)
    """``mode = "batch"``: seconds before the first status poll; quiet polls back off."""
    batch_poll_max: float = Field(default=600.0, gt=0)
    """``mode = "batch"``: the longest wait between two status polls, in seconds."""
    dimensions: int | None = Field(default=None, gt=0)
    """Output dimension sent to the API (text-embedding-3, Voyage, Cohere v4)."""
    dim: int | None = Field(default=None, gt=0)
    """Expected vector size when the model is not known and ``dimensions`` is unset."""
    timeout: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=4, gt=0, le=256)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_retries: int = Field(default=6, ge=0, le=100)
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=60.0, ge=0)
    failure_threshold: int = Field(default=5, gt=0)
    recovery_timeout: float = Field(default=30.0, ge=0)
    success_threshold: int = Field(default=2, gt=0)
    price_per_mtok: float | None = Field(default=None, ge=0)
    """USD per 1M input tokens; default: the catalog (``embedgen models --prices``)."""
    monthly_usd: float | None = Field(default=None, ge=0)
    """This provider's own monthly cap; a batch it cannot pay goes to the next in the chain."""
    space: str | None = None
    """Embedding-space id; members of one fallback chain must share it."""
    tokenizer: str | None = None
    """``cl100k_base``/``o200k_base``/``voyage3_base``, ``estimate``, or a tokenizer.json path."""
    max_tokens: int | None = Field(default=None, gt=1)
    max_batch_inputs: int | None = Field(default=None, gt=0)
    max_batch_tokens: int | None = Field(default=None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return v.rstrip("/") if v else v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in " =\t\n")):
            raise ValueError("expected the name of an environment variable, not a key")
        return v

    @field_validator("mode")
    @classmethod
    def _batch_api(cls, v: str) -> str:
        kind = cls.model_fields["kind"].default
        if v == "batch" and kind not in BATCH_KINDS:
            have = [k for k in KINDS if k in BATCH_KINDS] + sorted(BATCH_KINDS.difference(KINDS))
            raise PydanticCustomError(
                "config_rule",
                '"batch" needs a provider with a batch API ({have})',
                {"have": ", ".join(have)},
            )
        return v

    @model_validator(mode="after")
    def _dim_known(self) -> ApiConfigBase:
        if self.expected_dim() is None:
            raise ValueError(
                f"the vector size of model {self.model!r} is not known: set dim (or dimensions)"
            )
        return self

    # Derived facts -------------------------------------------------------------------
    def facts(self) -> HostedModel | None:
        """The catalog's record of this model, if it lists one."""
        return model_facts(self.model)

    def expected_dim(self) -> int | None:
        if self.dimensions is not None:
            return self.dimensions
        if self.dim is not None:
            return self.dim
        f = self.facts()
        return f.dim if f else None

    def limits(self) -> tuple[int, int, int]:
        """(max tokens per input, max inputs per request, max tokens per request)."""
        f = self.facts()
        base = (f.limits() if f else None) or KINDS[self.kind].limits
        return (
            self.max_tokens or base[0],
            self.max_batch_inputs or base[1],
            self.max_batch_tokens or base[2],
        )

    def price(self) -> float:
        """USD per 1M input tokens: ``price_per_mtok`` if set, else the catalog's."""
        if self.price_per_mtok is not None:
            return self.price_per_mtok
        return list_price(self.kind, self.model)

    def space_id(self) -> str:
        """``space`` if set, else ``family/model@dim`` (OpenAI and Azure share a family)."""
        if self.space:
            return self.space
        return f"{KINDS[self.kind].family}/{self.model}@{self.expected_dim()}"

    def endpoint(self) -> str:
        """Base URL with the kind's default filled in."""
        return self.base_url or KINDS[self.kind].url or ""


class OpenAIConfig(ApiConfigBase):
    """``kind = "openai"``: api.openai.com ``/v1/embeddings``."""

    kind: Literal["openai"] = "openai"
    api_key_env: str | None = "OPENAI_API_KEY"
    model: str = "text-embedding-3-small"


class AzureConfig(ApiConfigBase):
    """``kind = "azure"``: an Azure OpenAI deployment (``base_url`` is the resource URL)."""

    kind: Literal["azure"] = "azure"
    api_key_env: str | None = "AZURE_OPENAI_API_KEY"
    model: str = "text-embedding-3-small"
    """The model the deployment serves (names the embedding space)."""
    deployment: str
    api_version: str = "2024-10-21"

    @model_validator(mode="after")
    def _needs_url(self) -> AzureConfig:
        if not self.base_url:
            raise ValueError("base_url is required: https://RESOURCE.openai.azure.com")
        return self


class OpenAICompatibleConfig(ApiConfigBase):
    """``kind = "openai_compatible"``: TEI, vLLM, Ollama, Infinity, LM Studio..."""

    kind: Literal["openai_compatible"] = "openai_compatible"
    model: str

    @model_validator(mode="after")
    def _needs_url(self) -> OpenAICompatibleConfig:
        if not self.base_url:
            raise ValueError("base_url is required, e.g. http://localhost:8080/v1")
        return self


class MistralConfig(ApiConfigBase):
    """``kind = "mistral"``: api.mistral.ai ``/v1/embeddings``."""

    kind: Literal["mistral"] = "mistral"
    api_key_env: str | None = "MISTRAL_API_KEY"
    model: str = "mistral-embed"


class VoyageConfig(ApiConfigBase):
    """``kind = "voyage"``: api.voyageai.com ``/v1/embeddings``."""

    kind: Literal["voyage"] = "voyage"
    api_key_env: str | None = "VOYAGE_API_KEY"
    model: str = "voyage-3.5"
    input_type: Annotated[Literal["document", "query"], BeforeValidator(lower)] | None = "document"


class CohereConfig(ApiConfigBase):
    """``kind = "cohere"``: api.cohere.com ``/v2/embed`` (float embeddings)."""

    kind: Literal["cohere"] = "cohere"
    api_key_env: str | None = "CO_API_KEY"
    model: str = "embed-v4.0"
    input_type: Annotated[
        Literal["search_document", "search_query", "classification", "clustering"],
        BeforeValidator(lower),
    ] = "search_document"


ApiConfig = (
    OpenAIConfig
    | AzureConfig
    | OpenAICompatibleConfig
    | MistralConfig
    | VoyageConfig
    | CohereConfig
)
"""Every hosted kind, for the ``kind`` discriminator of ``ProviderConfig``."""
