"""Voyage AI: ``POST {base}/embeddings`` with ``input_type`` and ``output_dimension``.

Answers ``{"data": [{"index", "embedding"}], "usage": {"total_tokens"}}``. With an
int8/uint8/binary/ubinary output the run asks for it (``output_dtype``, same price).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embedgen.providers.http_base import HttpProvider, native_rows, usage_tokens
from embedgen.util.quantize import CALIBRATED, PACKED


class VoyageProvider(HttpProvider):
    native_dtypes = CALIBRATED + PACKED

    def url(self) -> str:
        return f"{self.cfg.endpoint()}/embeddings"

    def payload(self, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "input": list(texts)}
        it = getattr(self.cfg, "input_type", None)
        if it is not None:
            body["input_type"] = it
        if self.cfg.dimensions is not None:
            body["output_dimension"] = self.cfg.dimensions
        if self.native:
            body["output_dtype"] = self.native
        return body

    def read(self, data: Any, n: int) -> tuple[Any, int | None]:
        items = data["data"]
        if not isinstance(items, list):
            raise TypeError("'data' is not a list")
        if len(items) == n and all(isinstance(it, dict) and "index" in it for it in items):
            items = sorted(items, key=lambda it: int(it["index"]))
        rows = native_rows([it["embedding"] for it in items], self.native)
        return rows, usage_tokens(data, "usage", "total_tokens")
