"""The OpenAI embeddings protocol: OpenAI, Azure OpenAI, Mistral, compatible servers.

``POST {base}/embeddings`` with ``{"model", "input": [...], "dimensions"?}``, answered
with ``{"data": [{"index", "embedding"}], "usage": {"prompt_tokens"}}``. Azure posts to
``{resource}/openai/deployments/{deployment}/embeddings?api-version=...`` with an
``api-key`` header; compatible servers (TEI, vLLM, Ollama, Infinity, LM Studio) take the
same body at their own ``base_url``, with or without a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from embedgen.providers.http_base import HttpProvider, usage_tokens


class OpenAIProvider(HttpProvider):
    """``kind`` openai, openai_compatible or mistral."""

    def url(self) -> str:
        return f"{self.cfg.endpoint()}/embeddings"

    def payload(self, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "input": list(texts)}
        if self.cfg.dimensions is not None:
            key = "output_dimension" if self.cfg.kind == "mistral" else "dimensions"
            body[key] = self.cfg.dimensions
        if self.cfg.kind == "openai":
            body["encoding_format"] = "float"
        return body

    def read(self, data: Any, n: int) -> tuple[Any, int | None]:
        items = data["data"]
        if not isinstance(items, list):
            raise TypeError("'data' is not a list")
        if len(items) == n and all(isinstance(it, dict) and "index" in it for it in items):
            items = sorted(items, key=lambda it: int(it["index"]))
            if [int(it["index"]) for it in items] != list(range(n)):
                raise ValueError("indexes do not cover the inputs")
        rows = [it["embedding"] for it in items]
        return rows, usage_tokens(data, "usage", "prompt_tokens") or usage_tokens(
            data, "usage", "total_tokens"
        )


class AzureProvider(OpenAIProvider):
    """``kind`` azure: a deployment of an OpenAI model on Azure."""

    def url(self) -> str:
        c = self.cfg
        deployment = quote(str(c.deployment), safe="")  # type: ignore[attr-defined]
        version = quote(str(c.api_version), safe="")  # type: ignore[attr-defined]
        return f"{c.endpoint()}/openai/deployments/{deployment}/embeddings?api-version={version}"

    def payload(self, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"input": list(texts)}
        if self.cfg.dimensions is not None:
            body["dimensions"] = self.cfg.dimensions
        return body

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self._key.reveal()} if self._key else {}
