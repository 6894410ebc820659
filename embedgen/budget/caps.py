"""Caps and the money of one run: reserve before a request, reconcile after, alert on the way.

:class:`Budget` is shared by every worker thread of a run. Before a request it
reserves the batch's estimated cost (its exact token count times the price) against
every cap that applies: the run cap (``[budget] run_usd``, ``run --max-cost``), the
monthly cap over all providers (``[budget] monthly_usd``) and the provider's own
monthly cap (``[providers.NAME] monthly_usd``). A reservation that would pass a cap
is refused with :class:`OverBudget`, so with any number of requests in flight the
caps hold. After the request, the reservation is replaced by what the API reports it
billed (``usage``), or by the exact count when it reports nothing.

Money is integer pico-dollars (:mod:`embedgen.budget.prices`): sums are exact.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from embedgen.budget.ledger import Ledger, LedgerState, month_of
from embedgen.budget.prices import cost_pico, fmt_usd, to_pico
from embedgen.errors import BudgetExceeded, OverBudget

if TYPE_CHECKING:
    from embedgen.config import Config

log = logging.getLogger("embedgen")


@dataclass(frozen=True)
class Caps:
    """Caps in pico-dollars; None is no cap."""

    run: int | None = None
    monthly: int | None = None
    providers: dict[str, int] = field(default_factory=dict)
    """Provider name -> monthly cap."""
    alert_at: tuple[float, ...] = (0.5, 0.8, 0.95)

    @classmethod
    def from_config(cls, cfg: Config) -> Caps:
        b = cfg.budget
        # the command line overrides the config, as for every other option: --max-cost
        # may raise [budget] run_usd as well as lower it
        run_cap = cfg.run.max_cost_usd if cfg.run.max_cost_usd is not None else b.run_usd
        per: dict[str, int] = {}
        for name, p in cfg.providers.items():
            cap = getattr(p, "monthly_usd", None)
            if cap is not None:
                per[name] = to_pico(cap)
        return cls(
            run=to_pico(run_cap) if run_cap is not None else None,
            monthly=to_pico(b.monthly_usd) if b.monthly_usd is not None else None,
            providers=per,
            alert_at=tuple(sorted(b.alert_at)),
        )

    @property
    def any(self) -> bool:
        return self.run is not None or self.monthly is not None or bool(self.providers)


@dataclass
class Reservation:
    name: str
    amount: int
    price: float
    month: str


class Budget:
    """The caps, the ledger and this run's spend; thread-safe."""

    def __init__(
        self, ledger: Ledger, caps: Caps, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.ledger = ledger
        self.caps = caps
        self.run_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._now = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self.run_spent: dict[str, int] = {}
        self.run_tokens: dict[str, int] = {}
        self._run_reserved: dict[str, int] = {}
        self._snapshot = LedgerState()
        self._fired: set[tuple[str, float]] = set()
        self.stop_reason: str | None = None
        self._used_ledger = False

    @classmethod
    def from_config(cls, cfg: Config) -> Budget:
        from embedgen.budget.ledger import ledger_path

        return cls(Ledger(ledger_path(cfg.run.cache_dir)), Caps.from_config(cfg))

    # The router's questions (the Spend protocol) -------------------------------------
    def fits(self, account: str, price_per_mtok: float, tokens: int) -> str | None:
        """Why ``tokens`` more would pass a cap, by the last known ledger state (None: fits)."""
        cost = cost_pico(tokens, price_per_mtok)
        if cost == 0:
            return None
        with self._lock:
            return self._check(account, cost, self._snapshot, self._month())

    def reserve(self, account: str, price_per_mtok: float, tokens: int) -> Reservation:
        """Reserve the cost under every cap, or raise OverBudget."""
        month = self._month()
        res = Reservation(account, cost_pico(tokens, price_per_mtok), price_per_mtok, month)
        if res.amount == 0:
            return res
        with self._lock:
            reason = None
            with self.ledger.update() as state:
                self._used_ledger = True
                reason = self._check(res.name, res.amount, state, month)
                if reason is None:
                    entry = state.reserved.setdefault(
                        self.run_id,
                        {"pid": os.getpid(), "host": socket.gethostname(), "amounts": {}},
                    )
                    amounts = entry.setdefault("amounts", {})
                    amounts[res.name] = int(amounts.get(res.name, 0)) + res.amount
                    entry["updated"] = time.time()
                self._snapshot = _copy(state)
            if reason is None:
                self._run_reserved[res.name] = self._run_reserved.get(res.name, 0) + res.amount
        if reason is not None:
            msg = f"{res.name}: budget does not cover the batch ({reason})"
            raise OverBudget(msg, reason=reason)
        return res

    def settle(self, res: Reservation, billed_tokens: int) -> None:
        """Replace a reservation with what was billed."""
        actual = cost_pico(billed_tokens, res.price)
        if res.amount == 0 and actual == 0:
            return
        self._close_reservation(res, actual, billed_tokens)

    def release(self, res: Reservation) -> None:
        """Drop a reservation whose request failed (nothing was billed)."""
        if res.amount:
            self._close_reservation(res, 0, 0)

    # This run ------------------------------------------------------------------------
    def run_total(self) -> int:
        with self._lock:
            return sum(self.run_spent.values())

    def month_total(self) -> int:
        """Month-to-date spend over all providers, from the last ledger state seen."""
        with self._lock:
            return sum(self._snapshot.month_spend(self._month()).values())

    def stop(self, refused: dict[str, str]) -> str:
        """Stop reserving for the rest of the run; the reason, for the message."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = "; ".join(f"{n}: {r}" for n, r in refused.items())
            return self.stop_reason

    def exceeded(self, refused: dict[str, str]) -> BudgetExceeded:
        """The error that stops the run (its message is rebuilt by :meth:`message` at the end)."""
        self.stop(refused)
        return BudgetExceeded(self.message())

    def message(self) -> str:
        """Why the run stopped and what it spent, requests in flight included once settled."""
        with self._lock:
            spent = sum(self.run_spent.values())
            per = ", ".join(f"{n} {fmt_usd(v)}" for n, v in sorted(self.run_spent.items()) if v)
            month = sum(self._snapshot.month_spend(self._month()).values())
        return (
            f"stopped on budget: {self.stop_reason}; spent {fmt_usd(spent)} this run"
            + (f" ({per})" if per else "")
            + f", {fmt_usd(month)} this month; embedded chunks are cached: "
            + _raise_hint(self.stop_reason or "")
            + " and re-run to continue"
        )

    def close(self, status: str) -> None:
        """Record this run in the ledger (when it spent anything) and drop its reservations."""
        if not self._used_ledger:
            return
        with self._lock, self.ledger.update() as state:
            leftover = state.reserved.pop(self.run_id, None)
            if leftover:  # requests still in flight at exit: counted, they may be billed
                month = self._month()
                for name, amount in leftover.get("amounts", {}).items():
                    if int(amount) > 0:
                        state.add_spend(month, name, int(amount))
            state.runs.append(
                {
                    "id": self.run_id,
                    "started": self.started,
                    "finished": self._now().isoformat(timespec="seconds"),
                    "status": status,
                    "spend": dict(self.run_spent),
                    "tokens": dict(self.run_tokens),
                }
            )

    # Internals -------------------------------------------------------------------------
    def _month(self) -> str:
        return month_of(self._now())

    def _check(self, name: str, cost: int, state: LedgerState, month: str) -> str | None:
        """Why ``cost`` more for ``name`` would pass a cap; None when it fits."""
        if self.stop_reason is not None:
            return "the run stopped on budget"
        caps = self.caps
        if caps.run is not None:
            used = sum(self.run_spent.values()) + sum(self._run_reserved.values())
            if used + cost > caps.run:
                return f"the run cap of {fmt_usd(caps.run)} would be passed"
        if caps.monthly is None and name not in caps.providers:
            return None
        spend, flight = state.month_spend(month), state.in_flight()
        if caps.monthly is not None:
            used = sum(spend.values()) + sum(flight.values())
            if used + cost > caps.monthly:
                return f"the monthly cap of {fmt_usd(caps.monthly)} would be passed ({month})"
        pcap = caps.providers.get(name)
        if pcap is not None and spend.get(name, 0) + flight.get(name, 0) + cost > pcap:
            return f"providers.{name}.monthly_usd {fmt_usd(pcap)} would be passed ({month})"
        return None

    def _close_reservation(self, res: Reservation, actual: int, tokens: int) -> None:
        with self._lock:
            with self.ledger.update() as state:
                self._used_ledger = True
                entry = state.reserved.get(self.run_id)
                if entry is not None:
                    amounts = entry.get("amounts", {})
                    left = int(amounts.get(res.name, 0)) - res.amount
                    if left > 0:
                        amounts[res.name] = left
                    else:
                        amounts.pop(res.name, None)
                    entry["updated"] = time.time()
                    if not amounts:
                        state.reserved.pop(self.run_id, None)
                if actual:
                    state.add_spend(res.month, res.name, actual)
                self._snapshot = _copy(state)
            self._run_reserved[res.name] = self._run_reserved.get(res.name, 0) - res.amount
            if actual:
                self.run_spent[res.name] = self.run_spent.get(res.name, 0) + actual
                self.run_tokens[res.name] = self.run_tokens.get(res.name, 0) + tokens
            alerts = self._alerts(res.name)
        for line in alerts:
            log.warning(line)

    def _alerts(self, name: str) -> list[str]:
        """Warnings for caps whose alert fractions were crossed for the first time."""
        month = self._month()
        spend = self._snapshot.month_spend(month)
        checks = [
            ("run", "the run cap", self.caps.run, sum(self.run_spent.values())),
            ("monthly", f"the monthly cap ({month})", self.caps.monthly, sum(spend.values())),
            (
                f"providers.{name}",
                f"providers.{name}.monthly_usd ({month})",
                self.caps.providers.get(name),
                spend.get(name, 0),
            ),
        ]
        out = []
        for key, label, cap, used in checks:
            if not cap:
                continue
            crossed = [
                t for t in self.caps.alert_at if used >= t * cap and (key, t) not in self._fired
            ]
            if crossed:
                self._fired.update((key, t) for t in self.caps.alert_at if used >= t * cap)
                amounts = f"{fmt_usd(used)} of {fmt_usd(cap)}"
                out.append(f"budget: {max(crossed):.0%} of {label} used ({amounts})")
        return out


def _raise_hint(reason: str) -> str:
    """How to raise the cap(s) named in a stop reason."""
    hints = []
    if "run cap" in reason:
        hints.append("raise the run cap with `--max-cost USD` (or `[budget] run_usd`)")
    if "monthly cap" in reason:
        hints.append("raise `[budget] monthly_usd`")
    keys = dict.fromkeys(re.findall(r"providers\.\S+\.monthly_usd", reason))
    hints += [f"raise `{key}`" for key in keys]
    return "; ".join(hints) or "raise the cap"


def _copy(state: LedgerState) -> LedgerState:
    return LedgerState(
        months={m: dict(v) for m, v in state.months.items()},
        runs=[],
        reserved={
            k: {**v, "amounts": dict(v.get("amounts", {}))} for k, v in state.reserved.items()
        },
    )
