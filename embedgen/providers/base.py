"""The provider contract: plain metadata plus one batch method.

A provider is told nothing about corpora, caches or budgets. It receives a
:class:`Batch` of chunk texts (already cut to fit its limits, with token counts
in its own tokenizer) and returns a float32 matrix, one row per text. Everything
else (rate limits, retries, fallback, budgets) wraps around this contract.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, kw_only=True)
class ProviderInfo:
    """What a provider is, as plain data: listing providers loads nothing heavy."""

    name: str
    """Name in the config (``local``, ``openai``, ...)."""
    kind: str
    """Implementation: ``onnx``, ``openai``, ``azure``, ``openai_compatible``, ..."""
    model: str
    """Model id as the provider knows it."""
    space: str
    """Embedding-space id: providers of one fallback chain must share it."""
    dim: int
    max_tokens: int
    """Most tokens one input may have (the model's limit)."""
    max_batch_inputs: int
    max_batch_tokens: int
    price_per_mtok: float = 0.0
    max_concurrency: int = 1
    fingerprint: str
    """Everything that changes a vector, as text; hashed into every cache key."""
    details: dict[str, str] = field(default_factory=dict)
    """Extra facts for output metadata (pooling, normalisation, device...)."""

    @property
    def unit_vectors(self) -> bool:
        """The model L2-normalises its vectors (the cache then rejects any that are not)."""
        return self.details.get("normalize") == "true"


@dataclass(frozen=True)
class Batch:
    """Chunk texts for one request, with their token counts in the provider's tokenizer.

    ``input_ids`` is set when the texts were tokenized with the provider's own local
    tokenizer: model-ready ids (special tokens and prefix included), so a local model
    does not tokenize twice.
    """

    texts: Sequence[str]
    token_counts: Sequence[int]
    input_ids: Sequence[Sequence[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def tokens(self) -> int:
        return int(sum(self.token_counts))


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray
    """float32, shape (len(batch), dim)."""
    usage_tokens: int | None = None
    """Tokens the API says it billed, when it says so."""
    sparse: list[dict[int, float]] | None = None
    """Lexical weights (token id -> weight) per text, when sparse output was asked for."""
    colbert: list[np.ndarray] | None = None
    """ColBERT multi-vectors per text, (tokens - 1, dim) float32, when asked for."""
    models: list[str] | None = None
    """Model that embedded each row, when a fallback chain may mix models."""
    rate_limits: object | None = None
    """The reply's ``x-ratelimit-*`` values (``http_headers.RateLimitHeaders``), for the
    router to tighten its buckets; None for local models."""


class TextTokenizer(Protocol):
    """Tokenizes documents for chunking, in a provider's own tokens."""

    def encode_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Content tokens (no special tokens) and their character spans, per text."""
        ...

    def model_inputs(self, ids: Sequence[int]) -> list[int] | None:
        """Model-ready ids for a chunk's content ids, or None if the provider takes text."""
        ...

    @property
    def overhead(self) -> int:
        """Tokens a chunk costs beyond its content (special tokens and prefix)."""
        ...


class Provider(abc.ABC):
    """Turns a batch of texts into vectors. Subclasses implement :meth:`embed_batch`."""

    info: ProviderInfo

    @abc.abstractmethod
    def embed_batch(self, batch: Batch) -> EmbedResult:
        """Embed every text of the batch, in order; raise ProviderError on failure."""

    @abc.abstractmethod
    def tokenizer(self) -> TextTokenizer:
        """The tokenizer whose tokens count against this provider's limits."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Start loading what the first batch will need (a model session), in the background.

        Called whenever a miss is likely, so it must be cheap and do nothing when repeated.
        """

    def ready(self) -> bool:
        """False while :meth:`prepare` is still loading; a batch sent now would wait for it."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, connections."""
