"""``embedgen budget status | reset``: month-to-date spend against the caps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

budget_app = typer.Typer(
    help="Month-to-date API spend against the budget caps.", no_args_is_help=True
)


def _ledger(config: Path | None, cache_dir: Path | None) -> tuple[Any, Any]:
    from embedgen.budget.ledger import Ledger, ledger_path
    from embedgen.config import load

    cfg = load(config)
    where = str(cache_dir) if cache_dir else cfg.run.cache_dir
    return cfg, Ledger(ledger_path(where))


@budget_app.command("status")
def status(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config with caps."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Cache directory holding the ledger [default: as run]."
    ),
    month: str | None = typer.Option(None, "--month", help="YYYY-MM [default: this month, UTC]."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Spend per provider this month (UTC), in flight, and the caps."""
    from embedgen.budget.caps import Caps
    from embedgen.budget.ledger import month_of
    from embedgen.budget.prices import fmt_usd, usd

    cfg, ledger = _ledger(config, cache_dir)
    caps = Caps.from_config(cfg)
    state = ledger.read() if ledger.path.is_file() else None
    which = month or month_of()
    spend = state.month_spend(which) if state else {}
    flight = state.in_flight() if state else {}
    names = sorted(set(spend) | set(flight) | set(caps.providers))
    rows = [
        {
            "provider": n,
            "spent_usd": usd(spend.get(n, 0)),
            "in_flight_usd": usd(flight.get(n, 0)),
            "cap_usd": usd(caps.providers[n]) if n in caps.providers else None,
        }
        for n in names
    ]
    total = sum(spend.values())
    data = {
        "ledger": str(ledger.path),
        "month": which,
        "spent_usd": usd(total),
        "monthly_cap_usd": usd(caps.monthly) if caps.monthly is not None else None,
        "run_cap_usd": usd(caps.run) if caps.run is not None else None,
        "providers": rows,
        "last_runs": (state.runs[-5:] if state else []),
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("provider", "spent", "in flight", "cap", "left", title=f"spend in {which} (UTC)")
    for n in names:
        cap = caps.providers.get(n)
        used = spend.get(n, 0) + flight.get(n, 0)
        table.add_row(n, fmt_usd(spend.get(n, 0)), fmt_usd(flight.get(n, 0)),
                      fmt_usd(cap) if cap is not None else "-",
                      fmt_usd(max(0, cap - used)) if cap is not None else "-")  # fmt: skip
    cap = caps.monthly
    table.add_row("[b]all[/]", fmt_usd(total), fmt_usd(sum(flight.values())),
                  fmt_usd(cap) if cap is not None else "-",
                  fmt_usd(max(0, cap - total)) if cap is not None else "-")  # fmt: skip
    console = Console(highlight=False)
    console.print(table)
    if caps.run is not None:
        console.print(f"run cap: {fmt_usd(caps.run)} per run", markup=False)
    console.print(f"ledger: {ledger.path}", markup=False)


@budget_app.command("reset")
def reset(
    month: bool = typer.Option(False, "--month", help="Forget this month's spend (UTC)."),
    which: str | None = typer.Option(None, "--which", help="YYYY-MM [default: this month]."),
    provider: str | None = typer.Option(None, "--provider", help="Only this provider."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cache directory."),
) -> None:
    """Forget a month's recorded spend (all providers, or one)."""
    from embedgen.budget.ledger import month_of
    from embedgen.budget.prices import fmt_usd
    from embedgen.errors import UsageError

    if not month:
        raise UsageError("say what to reset: embedgen budget reset --month")
    _, ledger = _ledger(config, cache_dir)
    target = which or month_of()
    if not ledger.path.is_file():
        typer.echo(f"nothing recorded for {target}")
        return
    with ledger.update() as state:
        per = state.months.get(target, {})
        names = [provider] if provider else list(per)
        cleared = sum(per.pop(n, 0) for n in names)
        if not per:
            state.months.pop(target, None)
    who = f" of {provider}" if provider else ""
    typer.echo(f"reset the {target} spend{who}: forgot {fmt_usd(cleared)}")


def register(app: typer.Typer) -> None:
    app.add_typer(budget_app, name="budget")
