"""The built-in price table: USD per 1M input tokens, dated, one source of truth.

Prices change; the table says when it was compiled (:data:`PRICES_AS_OF`) and every
provider can override its price in the config (``price_per_mtok``). ``batch`` is the
price through the provider's asynchronous batch API where it has one (OpenAI: 50% off);
embedgen sends synchronous requests, so ``batch`` is shown by ``cost-estimate`` as what
the same tokens would cost there. Local ONNX models cost nothing.

Money is counted in integer pico-dollars (1e-12 USD) by the budget, so sums and cap
comparisons are exact: a price of ``p`` USD per 1M tokens is ``p * 1e6`` pico-dollars
per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PRICES_AS_OF = "2026-11-21"
"""When this table was compiled (list prices of each API's pricing page)."""

PICO = 10**12
"""Pico-dollars per dollar."""


@dataclass(frozen=True)
class Price:
    family: str
    """Who sells it: ``openai`` (also Azure OpenAI), ``voyage``, ``cohere``, ``mistral``..."""
    model: str
    usd_per_mtok: float
    batch_usd_per_mtok: float | None = None
    """Price through the provider's batch API, where one exists."""


_TABLE: tuple[Price, ...] = (
    Price("openai", "text-embedding-3-small", 0.02, 0.01),
    Price("openai", "text-embedding-3-large", 0.13, 0.065),
    Price("openai", "text-embedding-ada-002", 0.10, 0.05),
    Price("voyage", "voyage-3", 0.06),
    Price("voyage", "voyage-3-lite", 0.02),
    Price("voyage", "voyage-code-3", 0.18),
    Price("voyage", "voyage-3.5", 0.06),
    Price("voyage", "voyage-3.5-lite", 0.02),
    Price("voyage", "voyage-3-large", 0.18),
    Price("cohere", "embed-v4.0", 0.12),
    Price("cohere", "embed-english-v3.0", 0.10),
    Price("cohere", "embed-multilingual-v3.0", 0.10),
    Price("cohere", "embed-english-light-v3.0", 0.10),
    Price("cohere", "embed-multilingual-light-v3.0", 0.10),
    Price("mistral", "mistral-embed", 0.10),
    Price("gemini", "gemini-embedding-001", 0.15),
)

PRICES: dict[tuple[str, str], Price] = {(p.family, p.model): p for p in _TABLE}

_FAMILY = {"azure": "openai"}
"""Provider kinds that sell another family's models at its list price."""


def family_of(kind: str) -> str:
    return _FAMILY.get(kind, kind)


def lookup(kind: str, model: str) -> Price | None:
    """The table's price of ``model`` through a provider of ``kind``; None if not listed.

    Local (``onnx``) and self-hosted (``openai_compatible``) models are not listed:
    they cost nothing unless the config gives ``price_per_mtok``.
    """
    return PRICES.get((family_of(kind), model))


def list_price(kind: str, model: str) -> float:
    """USD per 1M input tokens from the table (0 when not listed)."""
    p = lookup(kind, model)
    return p.usd_per_mtok if p else 0.0


def batch_price(kind: str, model: str) -> float | None:
    """USD per 1M tokens through the batch API, for the kinds that have it (OpenAI)."""
    p = lookup(kind, model)
    if p is None or kind != "openai":
        return None
    return p.batch_usd_per_mtok


def pico_per_token(usd_per_mtok: float) -> int:
    """A price as integer pico-dollars per token (exact for up to six decimals)."""
    return round(usd_per_mtok * 1_000_000)


def cost_pico(tokens: int, usd_per_mtok: float) -> int:
    """Exact cost of ``tokens`` in pico-dollars."""
    return tokens * pico_per_token(usd_per_mtok)


def usd(pico: int) -> float:
    return pico / PICO


def to_pico(amount_usd: float) -> int:
    """A cap in pico-dollars, rounded down so a cap is never exceeded by rounding."""
    return math.floor(amount_usd * PICO + 1e-6)


def fmt_usd(pico: int) -> str:
    """``$1.23`` for amounts of a cent or more, four significant decimals below."""
    value = pico / PICO
    if value == 0:
        return "$0"
    if abs(value) >= 0.01:
        return f"${value:,.2f}"
    return f"${value:.6f}".rstrip("0")


def table_rows() -> list[Price]:
    """Every listed price, in table order (for ``embedgen models --prices``)."""
    return list(_TABLE)
