"""The budget of one run: what ``pipeline/run.py`` calls.

::

    budget = RunBudget.open(cfg, members)       # a Budget when any member has a price
    router = Router(members, spend=budget.budget)
    try:
        summary = LocalRun(...).execute()
    except BudgetExceeded as exc:
        raise budget.explain(exc, paths, cache, router) from None   # adds what remains
    finally:
        budget.close(...)

A run whose providers all cost nothing (local models, self-hosted servers without a
price) gets no budget at all: no ledger reads or writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.budget.prices import cost_pico, fmt_usd
from embedgen.errors import BudgetExceeded

if TYPE_CHECKING:
    from embedgen.budget.caps import Budget
    from embedgen.config import Config
    from embedgen.providers.base import ProviderInfo
    from embedgen.router import Router

log = logging.getLogger("embedgen")


class RunBudget:
    """The run's spend account (for the router) and what the run spent."""

    def __init__(self, cfg: Config, budget: Budget | None) -> None:
        self.cfg = cfg
        self.budget = budget
        self._closed = False

    @classmethod
    def open(cls, cfg: Config, infos: list[ProviderInfo]) -> RunBudget:
        """A budget when any member has a price; none (no ledger at all) otherwise."""
        if not any(i.price_per_mtok > 0 for i in infos):
            return cls(cfg, None)
        from embedgen.budget.caps import Budget

        return cls(cfg, Budget.from_config(cfg))

    def lines(self) -> list[str]:
        """Summary lines: what this run spent, per provider."""
        b = self.budget
        if b is None:
            return []
        per = ", ".join(f"{n} {fmt_usd(v)}" for n, v in sorted(b.run_spent.items()) if v)
        return [f"spent:     {fmt_usd(b.run_total())}" + (f" ({per})" if per else "")]

    def explain(
        self, exc: BudgetExceeded, paths: list[Path], cache: Any, router: Router
    ) -> BudgetExceeded:
        """``exc`` with what remains to embed (uncached chunks, tokens) and its cost."""
        if self.budget is None or self.budget.stop_reason is None:
            return exc
        # rebuilt now that requests in flight at the stop have settled
        return self.stopped(self.budget.message(), exc, paths, cache, router)

    def stopped(
        self, msg: str, exc: BudgetExceeded, paths: list[Path], cache: Any, router: Router
    ) -> BudgetExceeded:
        """The stop error: ``msg``, what remains and its cost, and the partial rows kept."""
        try:
            msg += "; " + self.remaining(paths, cache, router)
        except Exception as err:  # the stop message must not be lost to a counting error
            log.warning(f"could not count what remains to embed: {err}")
        out = BudgetExceeded(msg)
        if exc.kept is not None and exc.kept.partial is not None:
            out.kept = exc.kept
        return out

    def close(self, status: str) -> None:
        if self.budget is not None and not self._closed:
            self._closed = True
            self.budget.close(status)

    def remaining(self, paths: list[Path], cache: Any, router: Router) -> str:
        from embedgen.pipeline.estimate import count
        from embedgen.pipeline.targets import Target

        info = router.info
        window = min(self.cfg.run.max_tokens or info.max_tokens, info.max_tokens)
        target = Target(info.name, info, router.tokenizer(), window, self.cfg.run.overlap)
        counted = count(paths, [target], self.cfg, cache=cache, limit=self.cfg.run.limit)
        tally = counted.tallies[info.name]
        costs = ", ".join(
            f"{fmt_usd(cost_pico(tally.tokens, m.info.price_per_mtok))} at {m.info.name}"
            for m in router.members
        )
        note = "" if cache is not None else " (the cache is off: a re-run starts over)"
        return (
            f"remaining: {tally.chunks - tally.cached - tally.duplicate:,} chunks, "
            f"{tally.tokens:,} tokens, "
            f"about {costs}{note}"
        )
