"""``embedgen cache stats | verify | clear | prune | path``: inspect and maintain the cache."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from embedgen.cache import ModelStats

cache_app = typer.Typer(
    name="cache",
    help="Inspect and maintain the embedding cache (LMDB, keyed by model and text).",
    no_args_is_help=True,
)

_CACHE_DIR_HELP = "Cache directory (default: $EMBEDGEN_CACHE_DIR, else the user cache directory)."


def register(app: typer.Typer) -> None:
    """Add the ``cache`` command group to the app."""
    app.add_typer(cache_app, name="cache")


def _where(cache_dir: Path | None) -> Path:
    from embedgen.cache import resolve_cache_dir

    return resolve_cache_dir(cache_dir)


def _exists(path: Path) -> bool:
    return (path / "data.mdb").is_file()


@cache_app.command("path")
def path_cmd(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
) -> None:
    """Print the cache directory."""
    typer.echo(str(_where(cache_dir)))


@cache_app.command("stats")
def stats_cmd(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Entries and bytes per model, and the hit rate of the last run."""
    from embedgen.cache import CacheAdmin

    path = _where(cache_dir)
    rows: list[ModelStats] = []
    last: dict[str, Any] | None = None
    if _exists(path):
        with CacheAdmin.open(path, readonly=True) as cache:
            rows, last = cache.stats(), cache.last_run()
    if as_json:
        models = [_row_json(r) for r in rows]
        typer.echo(json.dumps({"path": str(path), "models": models, "last_run": last}, indent=2))
        return
    _print_stats(path, rows, last)


def _row_json(row: ModelStats) -> dict[str, Any]:
    from embedgen.cache.records import settings_of

    m = row.model
    return {
        "name": m.name if m else None,
        "fingerprint": row.fingerprint_id.hex(),
        "description": m.description if m else None,
        "dim": m.dim if m else None,
        "dtype": m.dtype if m else None,
        "settings": settings_of(m.description) if m else None,
        "created": m.created if m else None,
        "last_used": row.last_used or None,
        "entries": row.entries,
        "bytes": row.bytes,
    }


def _print_stats(path: Path, rows: list[ModelStats], last: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from embedgen.cache.records import settings_of
    from embedgen.util.sizes import format_bytes

    console = Console(highlight=False)
    if not rows:
        console.print(f"cache at {path}: empty", markup=False)
    else:
        table = Table(title=f"cache at {path}", title_justify="left")
        table.add_column("model (settings)", overflow="fold", min_width=24)
        for column in ("fingerprint", "vectors", "last used"):
            table.add_column(column, no_wrap=True)
        table.add_column("entries", justify="right")
        table.add_column("bytes", justify="right")
        for row in rows:
            m = row.model
            settings = settings_of(m.description) if m else {}
            table.add_row(
                (m.name if m else "(unregistered)")
                + "".join(f"\n  {k}={v}" for k, v in settings.items()),
                row.fingerprint_id.hex()[:12],
                f"{m.dim}-d {m.dtype}" if m else "?",
                (row.last_used or "never")[:10],
                f"{row.entries:,}",
                format_bytes(row.bytes),
            )
        console.print(table)
    if last is not None:
        total = last["hits"] + last["misses"]
        console.print(
            f"last run ({last.get('model') or last.get('fingerprint', '')[:12]}, "
            f"{last.get('finished', '?')}): {last['hits']:,} of {total:,} chunks cached "
            f"(hit rate {last['hit_rate']:.1%})",
            markup=False,
        )


@cache_app.command("verify")
def verify_cmd(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
    fix: bool = typer.Option(False, "--fix", help="Remove the bad entries found."),
) -> None:
    """Check every cached value's checksum, that it is a vector its model can make, and
    every model and document record.

    Exits 1 when bad entries remain (run again with --fix to remove them).
    """
    from embedgen.cache import CacheAdmin
    from embedgen.cli.output import error

    path = _where(cache_dir)
    if not _exists(path):
        typer.echo(f"no cache at {path}; nothing to verify")
        return
    with CacheAdmin.open(path, readonly=not fix) as cache:
        report = cache.verify(fix=fix)
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(report.reasons.items()))
    line = f"checked {report.checked:,} entries in {path}: {report.bad:,} bad"
    typer.echo(line + (f" ({reasons})" if reasons else ""))
    if report.bad_models:
        typer.echo(f"{report.bad_models} damaged model records" + (" removed" if fix else ""))
    if report.bad_records:
        typer.echo(f"{report.bad_records} damaged document or run records"
                   + (" removed" if fix else ""))  # fmt: skip
    if fix and report.bad:
        typer.echo(f"removed {report.removed:,} bad entries")
    left = report.remaining + (0 if fix else report.bad_models + report.bad_records)
    if left:
        error(f"{left:,} bad entries remain; run `embedgen cache verify --fix`")
        raise typer.Exit(1)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds in an age such as ``30d``, ``12h``, ``2w`` (also ``m`` minutes, ``s`` seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if m is None:
        raise typer.BadParameter(f"expected an age such as 30d, 12h or 2w, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@cache_app.command("prune")
def prune_cmd(
    unused_since: str | None = typer.Option(
        None, "--unused-since", help="Remove models no run has used for this long (30d, 12h, 2w)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Only this model: its name or a fingerprint hex prefix."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; remove nothing."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
) -> None:
    """Remove the cached vectors of models not used lately, or of one model."""
    import time

    from embedgen.cache import CacheAdmin
    from embedgen.errors import UsageError

    if unused_since is None and model is None:
        raise UsageError("cache prune: give --unused-since AGE, --model NAME, or both")
    age = parse_age(unused_since) if unused_since is not None else None
    path = _where(cache_dir)
    if not _exists(path):
        typer.echo(f"no cache at {path}; nothing to prune")
        return
    with CacheAdmin.open(path, readonly=dry_run) as cache:
        if age is None:
            chosen = cache.match(model) if model is not None else []
        else:
            cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - age))
            chosen = cache.unused_since(cutoff, model)
        names = ", ".join(f"{m.name} ({m.fingerprint_id.hex()[:12]})" for m in chosen)
        if dry_run or not chosen:
            typer.echo(f"would remove {names}" if chosen else "nothing to prune")
            return
        removed = cache.prune(chosen)
    typer.echo(f"removed {removed:,} vectors of {names} from {path}")


@cache_app.command("clear")
def clear_cmd(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
    model: str | None = typer.Option(
        None, "--model", help="Only this model: its name or a fingerprint hex prefix."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove every cached vector, or one model's."""
    from embedgen.cache import CacheAdmin
    from embedgen.errors import UsageError

    path = _where(cache_dir)
    if not _exists(path):
        typer.echo(f"no cache at {path}; nothing to clear")
        return
    with CacheAdmin.open(path) as cache:
        what, names = "every cached vector", []
        if model is not None:
            names = sorted(
                {f"{m.name} ({m.fingerprint_id.hex()[:12]})" for m in cache.match(model)}
            )
            what = "the cached vectors of " + ", ".join(names)
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(f"refusing to clear the cache at {path} without confirmation; "
                                 "pass --yes")  # fmt: skip
            typer.confirm(f"Remove {what} from {path}?", abort=True)
        removed = cache.clear(model)
    of = " of " + ", ".join(names) if names else ""
    typer.echo(f"removed {removed:,} vectors{of} from {path}")
