"""The spend account a router consults: what the budget looks like from the router.

The router never knows about caps, ledgers or months. Before a batch goes to a member
that has a price it asks :meth:`Spend.fits` (a quick check against the last known
state), then :meth:`Spend.reserve` (the authoritative one, which may still refuse with
:class:`~embedgen.errors.OverBudget`: another worker took the money meanwhile). After
the request it :meth:`Spend.settle`\\ s the reservation with the tokens the API billed,
or :meth:`Spend.release`\\ s it when nothing was billed. When every member refused a
batch on budget, :meth:`Spend.exceeded` gives the error that stops the run (exit 3).
:class:`embedgen.budget.caps.Budget` implements it.
"""

from __future__ import annotations

from typing import Any, Protocol

from embedgen.errors import BudgetExceeded


class Spend(Protocol):
    def fits(self, account: str, price_per_mtok: float, tokens: int) -> str | None:
        """None when ``tokens`` at ``price_per_mtok`` fit every cap of ``account``, else why not."""
        ...

    def reserve(self, account: str, price_per_mtok: float, tokens: int) -> Any:
        """Reserve the cost under every cap; raise OverBudget (with its reason) if it won't fit."""
        ...

    def settle(self, reservation: Any, billed_tokens: int) -> None:
        """Replace a reservation with what was billed."""
        ...

    def release(self, reservation: Any) -> None:
        """Drop a reservation whose request failed (nothing was billed)."""
        ...

    def exceeded(self, refused: dict[str, str]) -> BudgetExceeded:
        """The error that stops the run when every member refused (account -> reason)."""
        ...
