"""Budget figures for reports: what is left under the caps that apply to a provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedgen.budget.prices import fmt_usd

if TYPE_CHECKING:
    from embedgen.budget.caps import Caps
    from embedgen.budget.ledger import LedgerState
    from embedgen.config import Config


def this_month() -> str:
    from embedgen.budget.ledger import month_of

    return month_of()


def budget_state(cfg: Config) -> tuple[Caps, LedgerState]:
    from embedgen.budget.caps import Caps
    from embedgen.budget.ledger import Ledger, LedgerState, ledger_path

    caps = Caps.from_config(cfg)
    path = ledger_path(cfg.run.cache_dir)
    state = Ledger(path).read() if caps.any and path.is_file() else LedgerState()
    return caps, state


def remaining_budget(
    caps: Caps, state: LedgerState, name: str, month: str
) -> tuple[int | None, str]:
    """(pico-dollars left under the tightest cap that applies to ``name``, which cap)."""
    spend, flight = state.month_spend(month), state.in_flight()
    options: list[tuple[int, str]] = []
    if caps.run is not None:
        options.append((caps.run, f"run cap {fmt_usd(caps.run)}"))
    if caps.monthly is not None:
        used = sum(spend.values()) + sum(flight.values())
        options.append((caps.monthly - used, f"monthly cap {fmt_usd(caps.monthly)}, "
                                             f"{fmt_usd(used)} used in {month}"))  # fmt: skip
    pcap = caps.providers.get(name)
    if pcap is not None:
        used = spend.get(name, 0) + flight.get(name, 0)
        options.append((pcap - used, f"providers.{name}.monthly_usd {fmt_usd(pcap)}, "
                                     f"{fmt_usd(used)} used in {month}"))  # fmt: skip
    if not options:
        return None, "no budget cap"
    left, why = min(options)
    return max(0, left), why
