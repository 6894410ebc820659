"""``embedgen download`` and ``embedgen models``: thin shells over :mod:`embedgen.models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from embedgen.util.sizes import format_bytes


def download(
    model: str = typer.Argument(
        ..., help="A known model name (see `embedgen models`) or ORG/REPO."
    ),
    revision: str = typer.Option(None, "--revision", help="Branch, tag or commit (default: main)."),
    variant: str = typer.Option(
        None, "--variant", help="A listed variant, e.g. qint8_avx512_vnni."
    ),
    models_dir: Path = typer.Option(
        None, "--models-dir", help="Where models live (default: EMBEDGEN_MODELS_DIR or user data)."
    ),
    force: bool = typer.Option(False, "--force", help="Fetch again even if present and verified."),
    name: str = typer.Option(None, "--name", help="Folder name under the models dir."),
    onnx_file: str = typer.Option(None, "--onnx-file", help="ONNX file in the repo (ORG/REPO)."),
    pooling: str = typer.Option(None, "--pooling", help="mean | cls | model (default: from repo)."),
    dim: int = typer.Option(None, "--dim", help="Expected vector size (checked)."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Most tokens per input."),
    query_prefix: str = typer.Option(None, "--query-prefix", help="Text put before queries."),
    document_prefix: str = typer.Option(None, "--document-prefix", help="Text before documents."),
    require_verified: bool = typer.Option(
        False,
        "--require-verified",
        help="Refuse files the Hub (or mirror) lists without a sha256 to check them against.",
    ),
    optimize: bool = typer.Option(
        False, "--optimize", help="Then run `embedgen optimize` on it (into NAME-int8 beside it)."
    ),
) -> None:
    """Fetch an ONNX model from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN honoured)."""
    from embedgen.cli.output import warn
    from embedgen.models.download import download_model
    from embedgen.providers.smoke import smoke_test

    result = download_model(
        model,
        models_dir=models_dir,
        force=force,
        require_verified=require_verified,
        prove=smoke_test,
        revision=revision,
        variant=variant,
        name=name,
        onnx_file=onnx_file,
        pooling=pooling,
        dim=dim,
        max_tokens=max_tokens,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
    )
    for note in result.notes:
        warn(note)
    m = result.manifest
    where = f"{m.repo}@{(m.revision or '')[:12]}"
    facts = f"{m.dim}-d, {m.max_tokens} tokens, pooling {m.pooling}" + (
        ", sparse head" if m.sparse else ""
    )
    if result.fetched:
        size = format_bytes(result.size)
        typer.echo(f"{m.name}: downloaded {size} from {where} into {result.folder}")
        typer.echo(f"{m.name}: loaded and embedded a test sentence: {facts}")
    else:
        typer.echo(
            f"{m.name}: already in {result.folder} and verified "
            f"({format_bytes(result.size)}, {facts})"
        )
    if optimize:
        from embedgen.cli.optimize_cmd import run_optimize

        run_optimize(str(result.folder), out=result.folder.with_name(result.folder.name + "-int8"))


def _is_downloaded(folder: Path) -> bool:
    from embedgen.models.manifest import read_manifest

    try:
        manifest = read_manifest(folder)
    except Exception:  # an unreadable manifest is "not downloaded" in a listing
        return False
    return (
        manifest is not None
        and bool(manifest.files)
        and all(
            (folder / f.path).is_file() and (folder / f.path).stat().st_size == f.size
            for f in manifest.files
        )
    )


def _default_row() -> dict[str, Any]:
    """The embedded default every run without --model uses: always there, never downloaded."""
    from embedgen.models.local import (
        DEFAULT_MAX_TOKENS,
        DEFAULT_NAME,
        DEFAULT_SOURCE,
        original_default_model,
    )

    try:
        size: int | None = original_default_model().onnx_path.stat().st_size
    except Exception:  # the package is missing: `run` says how to reinstall it
        size = None
    return {
        "name": "default",
        "model": DEFAULT_NAME,
        "repo": DEFAULT_SOURCE,
        "dim": 384,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "size_bytes": size,
        "licence": "Apache-2.0",
        "variants": [],
        "downloaded": size is not None,
    }


def list_models(models_dir: Path | None = None) -> list[dict[str, Any]]:
    """Known and downloaded models as plain rows (what ``embedgen models --json`` prints)."""
    from embedgen.models.local import models_dir as default_models_dir
    from embedgen.models.manifest import read_manifest
    from embedgen.models.registry import load_registry

    root = (models_dir or default_models_dir()).expanduser()
    rows = [_default_row()]
    for e in load_registry().values():
        rows.append(
            {
                "name": e.name,
                "repo": e.repo,
                "dim": e.dim,
                "max_tokens": e.max_tokens,
                "size_bytes": e.size_bytes,
                "licence": e.licence,
                "variants": sorted(e.variants),
                "downloaded": _is_downloaded(root / e.name),
            }
        )
    known = {r["name"] for r in rows}
    if root.is_dir():
        for folder in sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            if folder.name in known:
                continue
            try:
                m = read_manifest(folder)
            except Exception:  # skip unreadable folders in a listing
                continue
            if m is None:
                continue
            rows.append(
                {
                    "name": folder.name,
                    "repo": m.repo,
                    "dim": m.dim,
                    "max_tokens": m.max_tokens,
                    "size_bytes": sum(f.size for f in m.files),
                    "licence": m.licence,
                    "variants": [],
                    "downloaded": _is_downloaded(folder),
                }
            )
    return rows


def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    models_dir: Path = typer.Option(None, "--models-dir", help="Where models live."),
    prices: bool = typer.Option(
        False, "--prices", help="Show the built-in API price table (USD per 1M tokens) instead."
    ),
) -> None:
    """List known models with dim, max tokens, size and whether each is downloaded."""
    if prices:
        _print_prices(as_json)
        return
    rows = list_models(models_dir)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console

    console = Console(highlight=False)
    table, dropped = _models_table(rows, console)
    console.print(table, crop=False)
    if dropped:
        console.print(f"(not shown at this width: {', '.join(dropped)}; see --json)", markup=False)
    default = rows[0]
    size = f", {format_bytes(default['size_bytes'])}" if default["size_bytes"] else ""
    console.print(
        f"default is {default['model']}: the int8 variant of {default['repo']}, embedded "
        f"(packaged{size}); `embedgen download all-minilm-l6-v2` fetches its fp32 export",
        markup=False,
        soft_wrap=False,
    )


# Columns of `embedgen models`, and the order in which they give way when the table
# is wider than the terminal (or the 80 columns of piped output); the name never does.
_COLUMNS = ("name", "repo", "dim", "max tokens", "size", "downloaded", "licence")
_DROP_ORDER = ("repo", "licence", "size", "max tokens", "dim", "downloaded")


def _cells(r: dict[str, Any]) -> dict[str, str]:
    return {
        "name": r["name"],
        "repo": r["repo"] or "",
        "dim": str(r["dim"] or "?"),
        "max tokens": str(r["max_tokens"] or "?"),
        "size": format_bytes(r["size_bytes"]) if r["size_bytes"] else "?",
        "downloaded": "[green]yes[/]" if r["downloaded"] else "no",
        "licence": r["licence"] or "",
    }


def _models_table(rows: list[dict[str, Any]], console: Any) -> tuple[Any, list[str]]:
    """The widest table that fits ``console`` without truncating a name or repo,
    and the columns left out to make it fit."""
    from rich.measure import Measurement
    from rich.table import Table

    cells = [_cells(r) for r in rows]
    unbounded = console.options.update_width(1_000_000)
    dropped: list[str] = []
    while True:
        shown = [c for c in _COLUMNS if c not in dropped]
        table = Table()
        for col in shown:
            whole = col in ("name", "repo")  # what a user types: never cut or wrapped
            longest = max((len(c[col]) for c in cells), default=0)
            table.add_column(
                col, no_wrap=whole, min_width=longest if whole else None, overflow="fold"
            )
        for c in cells:
            table.add_row(*(c[col] for col in shown))
        fits = Measurement.get(console, unbounded, table).maximum <= console.width
        if fits or len(dropped) == len(_DROP_ORDER):
            return table, dropped
        dropped.append(_DROP_ORDER[len(dropped)])


def _print_prices(as_json: bool) -> None:
    """The dated price table of :mod:`embedgen.budget.prices`."""
    from embedgen.config.catalog import PRICES_AS_OF, table_rows

    rows = [
        {
            "provider": p.family,
            "model": p.model,
            "usd_per_mtok": p.usd_per_mtok,
            "batch_usd_per_mtok": p.batch_usd_per_mtok,
        }
        for p in table_rows()
    ]
    if as_json:
        typer.echo(json.dumps({"as_of": PRICES_AS_OF, "prices": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "provider", "model", "USD / 1M tokens", "batch API", title=f"prices as of {PRICES_AS_OF}"
    )
    for r in rows:
        batch = r["batch_usd_per_mtok"]
        table.add_row(str(r["provider"]), str(r["model"]), f"{r['usd_per_mtok']:g}",
                      "-" if batch is None else f"{batch:g}")  # fmt: skip
    table.add_row("local", "any ONNX model", "0", "-")
    console = Console(highlight=False)
    console.print(table)
    console.print(
        "Override per provider with price_per_mtok in its [providers.NAME] table.", markup=False
    )


def register(app: typer.Typer) -> None:
    app.command("download")(download)
    app.command("models")(models)
