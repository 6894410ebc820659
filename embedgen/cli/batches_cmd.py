"""``embedgen batches [--json] | cancel ID | cancel --all``: the batch job journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

batches_app = typer.Typer(
    help='Batch jobs submitted by runs with mode = "batch": list or cancel them.',
    invoke_without_command=True,
)

_CONFIG = typer.Option(None, "--config", "-c", help="TOML config naming the providers.")
_CACHE = typer.Option(
    None, "--cache-dir", help="Cache directory holding the journal (default: as run)."
)


def _journal(config: Path | None, cache_dir: Path | None) -> tuple[Any, Any]:
    from embedgen.batch.journal import Journal
    from embedgen.cache import resolve_cache_dir
    from embedgen.config import load

    cfg = load(config)
    return cfg, Journal(resolve_cache_dir(str(cache_dir) if cache_dir else cfg.run.cache_dir))


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@batches_app.callback()
def batches(
    ctx: typer.Context,
    config: Path | None = _CONFIG,
    cache_dir: Path | None = _CACHE,
    pending: bool = typer.Option(False, "--pending", help="Only jobs not yet collected."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List batch jobs: provider, status, request counts, age and cost."""
    if ctx.invoked_subcommand is None:
        _list(config, cache_dir, pending, as_json)


@batches_app.command("list")
def list_jobs(
    config: Path | None = _CONFIG,
    cache_dir: Path | None = _CACHE,
    pending: bool = typer.Option(False, "--pending", help="Only jobs not yet collected."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List batch jobs (the same as plain ``embedgen batches``)."""
    _list(config, cache_dir, pending, as_json)


def _list(config: Path | None, cache_dir: Path | None, pending: bool, as_json: bool) -> None:
    from embedgen.batch.journal import summary
    from embedgen.budget.prices import fmt_usd, usd

    _, journal = _journal(config, cache_dir)
    jobs = [j for j in journal.jobs() if not (pending and j.final)]
    rows = [summary(j) for j in jobs]
    if as_json:
        for r in rows:
            r["cost_usd"] = usd(r.pop("cost_pico"))
        typer.echo(json.dumps({"journal": str(journal.dir), "jobs": rows}, indent=2))
        return
    if not rows:
        typer.echo(f"no batch jobs in {journal.dir}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("job", "batch", "provider", "status", "done", "failed", "inputs", "age", "cost",
                  title=f"batch jobs ({journal.dir})")  # fmt: skip
    for r in rows:
        status = r["state"] if r["state"] != "submitted" else (r["status"] or "submitted")
        done = f"{r['completed']:,}/{r['requests']:,}"
        table.add_row(r["id"], r["batch_id"] or "-", r["provider"], status, done,
                      f"{r['failed']:,}", f"{r['inputs']:,}", _age(r["age_seconds"]),
                      fmt_usd(r["cost_pico"]))  # fmt: skip
    Console().print(table)


@batches_app.command("cancel")
def cancel(
    job: str | None = typer.Argument(None, help="Job id (eg-...) or provider batch id."),
    all_jobs: bool = typer.Option(False, "--all", help="Cancel every pending job."),
    config: Path | None = _CONFIG,
    cache_dir: Path | None = _CACHE,
) -> None:
    """Cancel pending batch jobs; requests already done are collected by the next run."""
    from embedgen.batch.client import build_client
    from embedgen.errors import UsageError

    if (job is None) == (not all_jobs):
        raise UsageError("batches cancel: give a job id or --all (not both)")
    cfg, journal = _journal(config, cache_dir)
    if all_jobs:
        targets = [j for j in journal.jobs() if not j.final]
    else:
        found = journal.get(job or "")
        if found is None:
            raise UsageError(f"batches cancel: no job {job!r} in {journal.dir}")
        targets = [found]
    clients: dict[str, Any] = {}
    try:
        for j in targets:
            if j.final or j.batch_id is None:
                typer.echo(f"{j.id}: {j.state}, nothing to cancel")
                continue
            pcfg = cfg.providers.get(j.provider)
            if pcfg is None or getattr(pcfg, "kind", None) != j.kind:
                raise UsageError(
                    f"batches cancel: provider {j.provider!r} of job {j.id} is not in the "
                    "config (pass the config of the run that submitted it with -c)"
                )
            if j.provider not in clients:
                clients[j.provider] = build_client(j.provider, pcfg)
            remote = clients[j.provider].cancel(j.batch_id)
            j.status = str(remote.get("status") or "cancelling")
            journal.save(j)
            typer.echo(f"{j.id} ({j.batch_id}): {j.status}")
    finally:
        for c in clients.values():
            c.close()
    if not targets:
        typer.echo("no pending batch jobs")


def register(app: typer.Typer) -> None:
    app.add_typer(batches_app, name="batches")
