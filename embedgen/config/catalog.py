"""One catalog of hosted embedding models and provider kinds, as frozen records.

Each :class:`HostedModel` says what its provider documents: native dimension, limits
per input and per request, the list price per 1M input tokens (sync and, where the
provider has a batch API, batch), the date of that price and the tokenizer that counts
its tokens offline. Each :class:`ProviderKind` gives a kind's family, default endpoint,
tokenizer and the limits used for a model the catalog does not list (an open model
behind a self-hosted server). Listing the catalog imports nothing heavy.

Prices change: :data:`PRICES_AS_OF` says when they were compiled from each API's
pricing page, and every provider can override its price (``price_per_mtok``). Local
ONNX models and self-hosted (``openai_compatible``) models cost nothing unless the
config gives a price.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2026-11-21"
"""When the prices were compiled (list prices of each API's pricing page)."""

BATCH_KINDS = {"openai", "azure"}
"""Provider kinds with an asynchronous batch API (``mode = "batch"``)."""


@dataclass(frozen=True)
class HostedModel:
    """A hosted model as its provider documents it."""

    family: str
    """Who sells it: ``openai`` (also through Azure), ``voyage``, ``cohere``, ``mistral``..."""
    model: str
    usd_per_mtok: float
    """List price per 1M input tokens through the synchronous API."""
    batch_usd_per_mtok: float | None = None
    """Price through the provider's batch API, where one exists."""
    dim: int | None = None
    """Native vector size; None when the catalog lists only the price."""
    max_tokens: int | None = None
    """Most tokens per input."""
    max_batch_inputs: int | None = None
    """Most inputs per request."""
    max_batch_tokens: int | None = None
    """Most tokens per request."""
    tokenizer: str = "estimate"
    """How tokens are counted offline: a BPE encoding name or ``estimate``."""
    priced: str = PRICES_AS_OF
    """When the price was taken."""

    def limits(self) -> tuple[int, int, int] | None:
        """(max tokens per input, max inputs per request, max tokens per request)."""
        if self.max_tokens is None or self.max_batch_inputs is None:
            return None
        if self.max_batch_tokens is None:
            return None
        return (self.max_tokens, self.max_batch_inputs, self.max_batch_tokens)


@dataclass(frozen=True)
class ProviderKind:
    """A ``kind = ...`` of ``[providers.NAME]``: its family and defaults."""

    kind: str
    family: str
    url: str | None
    """Default ``base_url``; None when the config must give one."""
    tokenizer: str
    """Tokenizer for a model the catalog does not list."""
    limits: tuple[int, int, int]
    """(tokens per input, inputs per request, tokens per request) for unlisted models."""


def _openai(model: str, price: float, batch: float, dim: int) -> HostedModel:
    # OpenAI documents 2,048 inputs, 8,192 tokens per input, 300,000 tokens per request.
    return HostedModel("openai", model, price, batch, dim, 8191, 2048, 300_000, "cl100k_base")


def _voyage(model: str, price: float, dim: int, batch_tokens: int) -> HostedModel:
    # Voyage: 1,000 inputs per request, 120k to 1M tokens per request by model.
    return HostedModel("voyage", model, price, None, dim, 32_000, 1000, batch_tokens,
                       "voyage3_base")  # fmt: skip


def _cohere(model: str, price: float, dim: int, max_tokens: int) -> HostedModel:
    # Cohere: 96 inputs per request.
    return HostedModel("cohere", model, price, None, dim, max_tokens, 96, 96 * max_tokens)


HOSTED: tuple[HostedModel, ...] = (
    _openai("text-embedding-3-small", 0.02, 0.01, 1536),
    _openai("text-embedding-3-large", 0.13, 0.065, 3072),
    _openai("text-embedding-ada-002", 0.10, 0.05, 1536),
    _voyage("voyage-3", 0.06, 1024, 120_000),
    _voyage("voyage-3-lite", 0.02, 512, 120_000),
    _voyage("voyage-code-3", 0.18, 1024, 120_000),
    _voyage("voyage-3.5", 0.06, 1024, 320_000),
    _voyage("voyage-3.5-lite", 0.02, 1024, 1_000_000),
    _voyage("voyage-3-large", 0.18, 1024, 120_000),
    _cohere("embed-v4.0", 0.12, 1536, 8192),
    _cohere("embed-english-v3.0", 0.10, 1024, 512),
    _cohere("embed-multilingual-v3.0", 0.10, 1024, 512),
    _cohere("embed-english-light-v3.0", 0.10, 384, 512),
    _cohere("embed-multilingual-light-v3.0", 0.10, 384, 512),
    HostedModel("mistral", "mistral-embed", 0.10, None, 1024, 8192, 512, 16_384),
)
"""Every listed model, in the order ``embedgen models --prices`` shows them."""

MATRYOSHKA = frozenset(
    {
        "text-embedding-3-small",
        "text-embedding-3-large",
        "voyage-code-3",
        "voyage-3.5",
        "voyage-3.5-lite",
        "voyage-3-large",
        "embed-v4.0",
    }
)
"""Listed models trained for truncation (their APIs take an output dimension)."""

KINDS: dict[str, ProviderKind] = {
    k.kind: k
    for k in (
        ProviderKind("openai", "openai", "https://api.openai.com/v1", "cl100k_base",
                     (8191, 2048, 300_000)),
        ProviderKind("azure", "openai", None, "cl100k_base", (8191, 2048, 300_000)),
        ProviderKind("openai_compatible", "openai_compatible", None, "estimate",
                     (512, 32, 16_384)),
        ProviderKind("mistral", "mistral", "https://api.mistral.ai/v1", "estimate",
                     (8192, 512, 16_384)),
        ProviderKind("voyage", "voyage", "https://api.voyageai.com/v1", "voyage3_base",
                     (32_000, 1000, 120_000)),
        ProviderKind("cohere", "cohere", "https://api.cohere.com", "estimate",
                     (512, 96, 96 * 512)),
    )
}  # fmt: skip
"""The hosted provider kinds, in the order of the config's ``kind`` choices."""

API_KINDS = tuple(KINDS)

_BY_MODEL = {m.model: m for m in HOSTED}
_BY_FAMILY = {(m.family, m.model): m for m in HOSTED}


def family_of(kind: str) -> str:
    """Who sells a kind's models: Azure OpenAI sells OpenAI's at OpenAI's list price."""
    k = KINDS.get(kind)
    return k.family if k else kind


def model_facts(model: str) -> HostedModel | None:
    """The catalog's record of ``model`` (dimension and limits), whoever serves it."""
    return _BY_MODEL.get(model)


def lookup(kind: str, model: str) -> HostedModel | None:
    """The record of ``model`` sold through a provider of ``kind``; None if not listed."""
    return _BY_FAMILY.get((family_of(kind), model))


def list_price(kind: str, model: str) -> float:
    """USD per 1M input tokens from the catalog (0 when not listed)."""
    m = lookup(kind, model)
    return m.usd_per_mtok if m else 0.0


def batch_price(kind: str, model: str) -> float | None:
    """USD per 1M tokens through the batch API, for the kinds that have one."""
    m = lookup(kind, model)
    if m is None or kind not in BATCH_KINDS:
        return None
    return m.batch_usd_per_mtok


def default_tokenizer(kind: str, model: str | None = None) -> str:
    """The tokenizer that counts a model's tokens offline (``estimate`` if none is known)."""
    m = lookup(kind, model) if model else None
    if m is not None:
        return m.tokenizer
    k = KINDS.get(kind)
    return k.tokenizer if k else "estimate"


def table_rows() -> list[HostedModel]:
    """Every listed model with its price, in catalog order (``embedgen models --prices``)."""
    return list(HOSTED)


def trained_for_truncation(model: str) -> bool | None:
    """Whether a listed model was trained for truncation (None: not in the catalog)."""
    return model in MATRYOSHKA if model in _BY_MODEL else None
