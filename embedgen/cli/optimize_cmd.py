"""``embedgen optimize``: a faster int8 variant of a model, with its fidelity report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def optimize(
    model: str = typer.Argument(
        ..., help="A model folder, an .onnx file, a downloaded model's name, or `default`."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder to write (default: NAME-int8 in the models dir)."
    ),
    sample: str | None = typer.Option(
        None, "--sample", help="Measure on this Parquet/JSONL corpus (default: built-in sample)."
    ),
    text_column: str = typer.Option("text", "--text-column", help="Text column of --sample."),
    limit: int | None = typer.Option(None, "--limit", min=2, help="Use the first N texts."),
    min_cos: float = typer.Option(
        0.995, "--min-cos", help="Floor of the mean cosine to the original's vectors."
    ),
    min_worst: float = typer.Option(
        0.98, "--min-worst", help="Floor of the smallest cosine on the sample."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Make int8 variants, measure them against the original, keep the fastest within the floor."""
    run_optimize(
        model,
        out=out,
        sample=sample,
        text_column=text_column,
        limit=limit,
        min_cos=min_cos,
        min_worst=min_worst,
        as_json=as_json,
    )


def run_optimize(
    model: str,
    *,
    out: Path | None = None,
    sample: str | None = None,
    text_column: str = "text",
    limit: int | None = None,
    min_cos: float = 0.995,
    min_worst: float = 0.98,
    as_json: bool = False,
) -> None:
    """What ``embedgen optimize`` does (also run by ``embedgen download --optimize``)."""
    from embedgen.cli.output import stderr
    from embedgen.errors import FidelityFloorError
    from embedgen.optimize import optimize_model

    def progress(message: str) -> None:
        if not as_json:
            stderr.print(f"[dim]{message}[/]", markup=True, highlight=False)

    result = optimize_model(
        model,
        out=out,
        sample_corpus=sample,
        text_column=text_column,
        limit=limit,
        min_cos=min_cos,
        min_worst=min_worst,
        progress=progress,
    )
    if as_json:
        typer.echo(json.dumps(result.report, indent=2))
    else:
        _print(result.report)
    if not result.met:
        best = result.report["best"]
        reached = (
            f"the best reached mean {best['fidelity']['mean']:.6f}, "
            f"min {best['fidelity']['min']:.6f} ({best['label']})"
            if best
            else "no variant could be built"
        )
        raise FidelityFloorError(
            f"no variant met the floor (mean >= {min_cos}, min >= {min_worst}); {reached}; "
            "lower --min-cos/--min-worst or keep the original model"
        )


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    base = report["original"]["chunks_per_s"]
    table = Table(
        "variant", "mean cos", "min cos", "p1 cos", "top-10", "chunks/s", "speed", "floor",
        title=f"{report['source']['name']} on {report['sample']['texts']} texts "
        f"({report['sample']['source']})",
    )  # fmt: skip
    table.add_row("original", "1", "1", "1", "1", f"{base:.0f}", "1.00x", "")
    chosen = report["chosen"]
    for c in report["candidates"]:
        f = c["fidelity"]
        kept = chosen is not None and c["label"] == chosen["label"]
        table.add_row(
            ("[bold]" if kept else "") + c["label"] + (" (kept)[/]" if kept else ""),
            f"{f['mean']:.5f}",
            f"{f['min']:.5f}",
            f"{f['p1']:.5f}",
            f"{f['top10']:.3f}",
            f"{c['chunks_per_s']:.0f}",
            f"{c['speedup']:.2f}x" if c["speedup"] else "-",
            "[green]met[/]" if c["meets_floor"] else "[red]missed[/]",
        )
    console = Console(highlight=False)
    console.print(table)
    if chosen is not None:
        level = chosen["settings"]["graph_optimization"]
        console.print(
            f"kept {chosen['label']} ({chosen['speedup']:.2f}x, graph optimisation {level}) "
            f"in {report['output']}\nsha256 {report['sha256']}\n"
            f"use it with: embedgen run CORPUS --model {report['output']}",
            markup=False,
            soft_wrap=True,  # paths stay whole, to be copied
        )


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize)
