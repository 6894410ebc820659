"""Cohere v2: ``POST {base}/v2/embed`` with ``input_type`` and ``embedding_types``.

Asks for ``float`` embeddings and reads ``embeddings.float`` (one list per text, in
order), or the run's int8/uint8/binary/ubinary output type when it has one (same price);
billed tokens are ``meta.billed_units.input_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embedgen.providers.http_base import HttpProvider, native_rows, usage_tokens
from embedgen.util.quantize import CALIBRATED, PACKED


class CohereProvider(HttpProvider):
    native_dtypes = CALIBRATED + PACKED

    def url(self) -> str:
        return f"{self.cfg.endpoint()}/v2/embed"

    def payload(self, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "texts": list(texts),
            "input_type": getattr(self.cfg, "input_type", "search_document"),
            "embedding_types": [self.native or "float"],
        }
        if self.cfg.dimensions is not None:
            body["output_dimension"] = self.cfg.dimensions
        return body

    def read(self, data: Any, n: int) -> tuple[Any, int | None]:
        rows = native_rows(data["embeddings"][self.native or "float"], self.native)
        return rows, usage_tokens(data, "meta", "billed_units", "input_tokens")
