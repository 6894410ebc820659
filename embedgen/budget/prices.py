"""Money arithmetic of the budget: integer pico-dollars, costs and formatting.

Money is counted in integer pico-dollars (1e-12 USD), so sums and cap comparisons are
exact: a price of ``p`` USD per 1M tokens is ``p * 1e6`` pico-dollars per token. The
prices themselves (dated, per model, sync and batch) are in the catalog,
:mod:`embedgen.config.catalog`; every provider can override its price in the config.
"""

from __future__ import annotations

import math

PICO = 10**12
"""Pico-dollars per dollar."""


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
    if abs(value) < 0.000001:  # "$0." said nothing
        return "<$0.000001" if value > 0 else "-<$0.000001"
    return f"${value:.6f}".rstrip("0")
