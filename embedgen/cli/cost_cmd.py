"""``embedgen cost-estimate``: what a corpus would cost, and take, with each provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def cost_estimate(
    input: str = typer.Argument(..., help="Parquet or JSONL file, directory or glob."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config: providers, limits, prices, budget caps."
    ),
    provider: list[str] | None = typer.Option(
        None,
        "--provider",
        "-p",
        help="A provider of the config, or KIND:MODEL (openai:text-embedding-3-small, "
        "voyage:voyage-3, local:default); repeatable [default: the config's providers, "
        "else openai, voyage and the local default].",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    sample: int | None = typer.Option(
        None, "--sample", min=1, help="Read only the first N documents and extrapolate."
    ),
    text_column: str | None = typer.Option(
        None, "--text-column", help="Column with the text [default: text]."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Vector cache whose chunks cost nothing [default: as run]."
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        help="The sink a run would write (lancedb:PATH or "
        "postgresql://...): the documents it holds unchanged cost nothing.",
    ),
    table: str | None = typer.Option(
        None, "--table", help="The sink's table, as for run [default: chunks]."
    ),
) -> None:
    """Count tokens with each provider's tokenizer and price them, minus cached chunks."""
    from embedgen.pipeline.cost import estimate_cost

    report = estimate_cost(
        input,
        config=config,
        providers=provider,
        sample=sample,
        text_column=text_column,
        cache_dir=cache_dir,
        output=output,
        table=table,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print(report)


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from embedgen.budget.prices import PICO, fmt_usd

    def money(v: float | None) -> str:
        return "-" if v is None else fmt_usd(round(v * PICO))

    title = f"{report['input']}: {report['documents']:,} documents"
    if report["extrapolated"]:
        title += f" (extrapolated from the first {report['sample_documents']:,})"
    if "sink" in report:
        unchanged = report["providers"][0]["unchanged_in_sink"]
        title += f", {unchanged:,} unchanged in {report['sink']} (cost nothing)"
    # One column per provider, one row per figure: it fits 80 columns with a few
    # providers (ten figures side by side were cut to "prov…" and "$0.").
    rows = report["providers"]
    slots = "total_cost_usd" in report
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    for r in rows:
        table.add_column(f"slot {r['slot']}" if slots else r["provider"], overflow="fold")
    figures: list[tuple[str, Any]] = [
        ("model", lambda r: r["model"]),
        ("chunks", lambda r: f"{r['chunks']:,}"),
        ("tokens", lambda r: f"{r['tokens_all_chunks']:,}" + _star(r)),
        ("cached", lambda r: f"{r['cached_pct']:.1f}%"),
        ("to embed", lambda r: f"{r['tokens']:,} tokens" + _star(r)),
        ("requests", lambda r: "-" if r["requests"] is None else f"{r['requests']:,}"),
        ("cost", lambda r: money(r["cost_usd"])),
        ("batch API", lambda r: money(r["batch_cost_usd"])),
        ("time", lambda r: _duration(r["seconds"])),
        ("fits budget", lambda r: {None: "no cap", True: "[green]yes[/]",
                                   False: "[red]no[/]"}[r["fits_budget"]]),
    ]  # fmt: skip
    for label, cell in figures:
        table.add_row(label, *(cell(r) for r in rows))
    console = Console(highlight=False)
    console.print(table)
    for r in report["providers"]:
        console.print(
            f"{r['provider']}: ${r['price_usd_per_mtok']:g}/1M tokens, tokens "
            f"{r['token_count']}; time: {r['time_basis']}; budget: {r['budget_note']}"
            + _batch_note(r),
            markup=False,
        )
    if slots:
        console.print(f"total over the slots: {money(report['total_cost_usd'])}", markup=False)
    if any(r["token_count"].startswith("estimate") for r in report["providers"]):
        console.print("* estimated: no public tokenizer for this API; counted on the high side")
    console.print(f"prices as of {report['prices_as_of']} (embedgen models --prices)")


def _star(r: dict[str, Any]) -> str:
    return "*" if r["token_count"].startswith("estimate") else ""


def _batch_note(r: dict[str, Any]) -> str:
    """``mode = "batch"``: its cost, jobs and time (each job ends within the window)."""
    if not r.get("batch_seconds_max"):
        return ""
    jobs = r["batch_jobs"]
    return (f"; batch mode: ${r['batch_cost_usd']:,.6g} in {jobs:,} job{'s' * (jobs != 1)}, "
            f"done within {_duration(r['batch_seconds_max'])}")  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def register(app: typer.Typer) -> None:
    app.command("cost-estimate")(cost_estimate)
