"""Cohere v2: ``POST {base}/v2/embed`` with ``input_type`` and ``embedding_types``.

Asks for ``float`` embeddings and reads ``embeddings.float`` (one list per text, in
order); billed tokens are ``meta.billed_units.input_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embedgen.providers.http_base import HttpProvider, usage_tokens


class CohereProvider(HttpProvider):
    def url(self) -> str:
        return f"{self.cfg.endpoint()}/v2/embed"

    def payload(self, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "texts": list(texts),
            "input_type": getattr(self.cfg, "input_type", "search_document"),
            "embedding_types": ["float"],
        }
        if self.cfg.dimensions is not None:
            body["output_dimension"] = self.cfg.dimensions
        return body

    def read(self, data: Any, n: int) -> tuple[Any, int | None]:
        return data["embeddings"]["float"], usage_tokens(
            data, "meta", "billed_units", "input_tokens"
        )
