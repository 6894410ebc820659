"""Putting a :class:`Budget` around a run's provider (one provider or a fallback chain).

Each chain member is wrapped in :class:`BudgetedProvider`: its ``can_afford`` (the
chain's budget hook) asks the budget, and its ``embed_batch`` reserves the batch's
cost before the request and settles it with the billed usage after. A reservation
that no longer fits (another thread took the money meanwhile) raises
:class:`~embedgen.budget.caps.OverBudget`, a ProviderError, so the chain moves on to
the next member that shares the embedding space, exactly as when ``can_afford`` says
no. :class:`BudgetGuard` wraps the whole: when every member refused a batch on
budget, the run stops with :class:`~embedgen.errors.BudgetExceeded` (exit 3).
"""

from __future__ import annotations

from typing import Any

from embedgen.budget.caps import Budget
from embedgen.errors import FatalProviderError, ProviderError
from embedgen.providers.base import Batch, EmbedResult, Provider, TextTokenizer


class BudgetedProvider(Provider):
    """One provider whose requests are paid for out of a budget."""

    def __init__(self, inner: Provider, budget: Budget) -> None:
        self.inner = inner
        self.info = inner.info
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        # stats(), available(), seconds_until_available() and the like: the inner's own.
        if name in ("inner", "info", "budget"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def can_afford(self, batch: Batch) -> bool:
        own = getattr(self.inner, "can_afford", None)
        if callable(own) and not own(batch):
            return False
        return self.budget.fits(self.info, batch)

    def tokenizer(self) -> TextTokenizer:
        return self.inner.tokenizer()

    def embed_batch(self, batch: Batch) -> EmbedResult:
        res = self.budget.reserve(self.info, batch)
        try:
            result = self.inner.embed_batch(batch)
        except BaseException:
            self.budget.release(res)
            raise
        billed = result.usage_tokens if result.usage_tokens is not None else batch.tokens
        self.budget.settle(res, billed)
        return result

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"BudgetedProvider({self.inner!r})"


class BudgetGuard(Provider):
    """The run's provider under a budget: BudgetExceeded when no member can pay."""

    def __init__(self, inner: Provider, budget: Budget, members: list[BudgetedProvider]) -> None:
        self.inner = inner
        self.info = inner.info
        self.budget = budget
        self._members = members

    @property
    def members(self) -> list[BudgetedProvider]:
        """The budgeted members (the run summary reads their stats)."""
        return list(self._members)

    def tokenizer(self) -> TextTokenizer:
        return self.inner.tokenizer()

    def embed_batch(self, batch: Batch) -> EmbedResult:
        self.budget.begin_batch()
        try:
            return self.inner.embed_batch(batch)
        except FatalProviderError:
            raise
        except ProviderError:
            refused = self.budget.refusals()
            if refused and all(m.info.name in refused for m in self._members):
                raise self.budget.exceeded(refused, batch) from None
            raise

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"BudgetGuard({self.inner!r})"


def attach(provider: Provider, budget: Budget) -> BudgetGuard:
    """``provider`` (a member or a FallbackChain) with every request paid from ``budget``."""
    from embedgen.providers.chain import FallbackChain

    if isinstance(provider, FallbackChain):
        members = [BudgetedProvider(m, budget) for m in provider.members]
        inner: Provider = FallbackChain(
            members,
            provider.allow_mixed_models,
            max_wait=provider.max_wait,
            sleep=provider._sleep,
        )
        return BudgetGuard(inner, budget, members)
    member = BudgetedProvider(provider, budget)
    return BudgetGuard(member, budget, [member])
