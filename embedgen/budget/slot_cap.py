"""A model slot's own spend cap, in front of the run's budget (``[slots.NAME] max_cost_usd``).

A run with several model slots has one :class:`~embedgen.budget.caps.Budget` (the run,
monthly and per-provider caps over every slot). Each slot's router consults a
:class:`SlotCap` instead: it refuses what would pass the slot's own cap, counting what the
slot reserved and spent, and hands everything else to the shared budget. It is a
``Spend`` (``router/spend.py``) like the budget itself.
"""

from __future__ import annotations

import threading
from typing import Any

from embedgen.budget.prices import cost_pico, fmt_usd, to_pico
from embedgen.errors import BudgetExceeded, OverBudget


class SlotCap:
    def __init__(self, inner: Any, slot: str, cap_usd: float | None) -> None:
        self.inner = inner
        """The run's Budget (shared by every slot)."""
        self.slot = slot
        self.cap = to_pico(cap_usd) if cap_usd is not None else None
        self.spent = 0
        self._reserved = 0
        self._lock = threading.Lock()

    def _over(self, cost: int) -> str | None:
        if self.cap is None or self.spent + self._reserved + cost <= self.cap:
            return None
        return (
            f"slot {self.slot}'s cap {fmt_usd(self.cap)} (spent {fmt_usd(self.spent)}) "
            f"does not cover {fmt_usd(cost)} more"
        )

    def fits(self, account: str, price_per_mtok: float, tokens: int) -> str | None:
        with self._lock:
            reason = self._over(cost_pico(tokens, price_per_mtok))
        return reason or self.inner.fits(account, price_per_mtok, tokens)

    def reserve(self, account: str, price_per_mtok: float, tokens: int) -> Any:
        cost = cost_pico(tokens, price_per_mtok)
        with self._lock:
            reason = self._over(cost)
            if reason is not None:
                raise OverBudget(reason)
            self._reserved += cost
        try:
            return self.inner.reserve(account, price_per_mtok, tokens)
        except BaseException:
            with self._lock:
                self._reserved -= cost
            raise

    def settle(self, reservation: Any, billed_tokens: int) -> None:
        self.inner.settle(reservation, billed_tokens)
        with self._lock:
            self._reserved -= reservation.amount
            self.spent += cost_pico(billed_tokens, reservation.price)

    def release(self, reservation: Any) -> None:
        self.inner.release(reservation)
        with self._lock:
            self._reserved -= reservation.amount

    def exceeded(self, refused: dict[str, str]) -> BudgetExceeded:
        if all(r.startswith(f"slot {self.slot}'s cap") for r in refused.values()):
            return BudgetExceeded(f"slot {self.slot}: {next(iter(refused.values()))}")
        exc: BudgetExceeded = self.inner.exceeded(refused)
        return exc
