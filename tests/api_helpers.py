"""Building API providers against the loopback servers of ``tests/api_servers.py``."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field, TypeAdapter

from embedgen.config import ApiConfig, ApiConfigBase
from embedgen.providers.api_factory import build_api_provider
from embedgen.providers.base import Batch, Provider
from embedgen.router import Member, Router
from embedgen.router.build import reliability
from tests.api_servers import ApiServer, vector_for

KEY = "sk-test-0123456789abcdef"
KEY_VARS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "MISTRAL_API_KEY", "VOYAGE_API_KEY")
KEY_VARS_ALL = (*KEY_VARS, "CO_API_KEY", "EG_COMPAT_KEY")

# Tiny backoffs and timeouts so fault tests take milliseconds.
FAST: dict[str, Any] = {
    "timeout": 0.5,
    "max_retries": 3,
    "backoff_base": 0.001,
    "backoff_max": 0.01,
    "failure_threshold": 5,
    "recovery_timeout": 0.2,
    "success_threshold": 2,
}

PROTOCOL = {
    "openai": "openai",
    "azure": "azure",
    "openai_compatible": "openai",
    "mistral": "openai",
    "voyage": "voyage",
    "cohere": "cohere",
}

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Annotated[ApiConfig, Field(discriminator="kind")])


def api_config(kind: str, server: ApiServer, **over: Any) -> ApiConfigBase:
    """A validated config of ``kind`` pointed at ``server`` (8-d vectors, fast retries)."""
    url = server.url
    base: dict[str, Any] = {
        "openai": {"base_url": url + "/v1", "dimensions": 8},
        "azure": {"base_url": url, "deployment": "emb", "dimensions": 8},
        "openai_compatible": {
            "base_url": url + "/v1",
            "model": "BAAI/bge-small-en-v1.5",
            "dim": 8,
            "api_key_env": "EG_COMPAT_KEY",
            "tokenizer": "cl100k_base",
        },
        "mistral": {"base_url": url + "/v1", "dimensions": 8},
        "voyage": {"base_url": url + "/v1", "dimensions": 8},
        "cohere": {"base_url": url, "dimensions": 8},
    }[kind]
    data = {"kind": kind, **FAST, **base, **over}
    return _ADAPTER.validate_python(data)  # type: ignore[no-any-return]


def provider(kind: str, server: ApiServer, name: str | None = None, **over: Any) -> Member:
    """A router member for ``kind`` against ``server``: the provider with its limits."""
    cfg = api_config(kind, server, **over)
    return Member(build_api_provider(name or kind, cfg), reliability(cfg))


def route(*members: Member, **options: Any) -> Router:
    """A router over ``members`` (the chain of a run), e.g. ``route(p).embed(batch)``."""
    return Router(list(members), **options)


def batch_of(p: Member | Router | Provider, texts: list[str]) -> Batch:
    tok = p.tokenizer()
    counts = [len(ids) + tok.overhead for ids, _ in tok.encode_offsets(texts)]
    return Batch(texts, counts)


def expected(server: ApiServer, texts: list[str], dim: int = 8) -> np.ndarray:
    return np.stack([vector_for(t, dim, server.state.model) for t in texts])
