"""Money of batch jobs: reserved when a batch is submitted, settled when it is collected.

A batch submitted tonight may be collected tomorrow by another process, so its
reservation cannot belong to a run (a run's reservations count as spent once its
process is gone). It is a ledger reservation of its own, ``batch:<job id>`` marked
``"batch": true``, that outlives runs (:mod:`embedgen.budget.ledger` counts it as spent
only after 30 days). Collection replaces it by the cost of the tokens the provider
billed, in the same locked ledger update, and only when it is still there: collecting
a job twice (a kill between settling and journalling) never counts it twice.

Caps apply as to synchronous requests: the run cap (this process's batches), the
monthly cap and the provider's monthly cap (spend plus everything in flight).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from embedgen.budget.ledger import Ledger, month_of
from embedgen.budget.prices import cost_pico, fmt_usd
from embedgen.errors import BudgetExceeded

if TYPE_CHECKING:
    from embedgen.budget.caps import Caps
    from embedgen.config import Config

PREFIX = "batch:"


class BatchSpend:
    """Reserve, settle and release the money of batch jobs in the spend ledger."""

    def __init__(
        self, ledger: Ledger, caps: Caps, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.ledger = ledger
        self.caps = caps
        self._now = clock or (lambda: datetime.now(timezone.utc))
        self.run_used = 0
        """Pico-dollars reserved or billed by batches of this process (the run cap)."""
        self.settled: dict[str, int] = {}
        """Provider -> pico-dollars settled by this process."""

    @classmethod
    def from_config(cls, cfg: Config) -> BatchSpend:
        from embedgen.budget.caps import Caps
        from embedgen.budget.ledger import ledger_path

        return cls(Ledger(ledger_path(cfg.run.cache_dir)), Caps.from_config(cfg))

    def reserve(self, job_id: str, name: str, tokens: int, price: float) -> int:
        """Reserve ``tokens`` at ``price`` for a job; its pico-dollars, or BudgetExceeded."""
        amount = cost_pico(tokens, price)
        if amount == 0:
            return 0
        month = month_of(self._now())
        with self.ledger.update() as state:
            reason = self._check(name, amount, state, month)
            if reason is None:
                state.reserved[PREFIX + job_id] = {
                    "batch": True,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "updated": time.time(),
                    "amounts": {name: amount},
                }
        if reason is not None:
            raise BudgetExceeded(
                f"stopped on budget: {name}: a batch of {tokens:,} tokens "
                f"({fmt_usd(amount)} at the batch price) does not fit: {reason}"
            )
        self.run_used += amount
        return amount

    def settle(self, job_id: str, name: str, billed_tokens: int, price: float) -> int:
        """Replace the job's reservation by the billed cost (once); that cost."""
        cost = cost_pico(billed_tokens, price)
        month = month_of(self._now())
        with self.ledger.update() as state:
            entry = state.reserved.pop(PREFIX + job_id, None)
            first = entry is not None or not _recorded(state.runs, job_id)
            if first and cost:
                state.add_spend(month, name, cost)
            if first:
                state.runs.append(
                    {
                        "id": PREFIX + job_id,
                        "started": _iso(
                            float(entry.get("updated", time.time())) if entry else None
                        ),
                        "finished": self._now().isoformat(timespec="seconds"),
                        "status": "batch collected",
                        "spend": {name: cost},
                        "tokens": {name: billed_tokens},
                    }
                )
        if first:
            reserved = int(entry.get("amounts", {}).get(name, 0)) if entry else 0
            self.run_used += cost - min(reserved, self.run_used)
            self.settled[name] = self.settled.get(name, 0) + cost
        return cost

    def release(self, job_id: str) -> None:
        """Drop a job's reservation without spend (a batch refused before it ran)."""
        with self.ledger.update() as state:
            entry = state.reserved.pop(PREFIX + job_id, None)
        if entry:
            amount = sum(int(v) for v in entry.get("amounts", {}).values())
            self.run_used -= min(amount, self.run_used)

    def _check(self, name: str, cost: int, state: object, month: str) -> str | None:
        from embedgen.budget.report import remaining_budget

        caps = self.caps
        if caps.run is not None and self.run_used + cost > caps.run:
            return f"the run cap of {fmt_usd(caps.run)} would be passed"
        if caps.monthly is None and name not in caps.providers:
            return None
        left, why = remaining_budget(
            caps.__class__(None, caps.monthly, caps.providers, caps.alert_at),
            state,  # type: ignore[arg-type]
            name,
            month,
        )
        if left is not None and cost > left:
            return f"{why}: {fmt_usd(left)} left"
        return None


def _recorded(runs: list[dict[str, object]], job_id: str) -> bool:
    return any(r.get("id") == PREFIX + job_id for r in runs)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
