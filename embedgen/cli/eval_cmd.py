"""``embedgen eval``: what each vector output choice costs in retrieval, on your corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def eval_command(
    input: str = typer.Argument(..., help="Parquet or JSONL corpus (file, directory or glob)."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Local model folder or name [default: embedded default]."
    ),
    sample: int = typer.Option(
        2000, "--sample", min=50, help="Chunks to sample (every tenth is a query) [default: 2000]."
    ),
    text_column: str | None = typer.Option(
        None, "--text-column", help="Column with the text [default: text]."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as one JSON list."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw recall against bytes per vector to this PNG."
    ),
) -> None:
    """Recall@10 of every output type x dimension against float32, with and without rescoring."""
    from embedgen.cli.output import stderr
    from embedgen.config import load
    from embedgen.optimize.retention import RESCORE_TOP, evaluate
    from embedgen.optimize.retention import plot as draw

    if plot is not None and plot.suffix.lower() != ".png":
        from embedgen.errors import UsageError

        raise UsageError(f"--plot {plot}: give a .png file name")
    rows = evaluate(input, model=model, sample=sample, config=load(config),
                    text_column=text_column)  # fmt: skip
    if plot is not None:
        draw(rows, plot)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=1))
        return
    typer.echo(format_table(rows))
    typer.echo(
        f"\nrescore: the top {RESCORE_TOP} by the written vectors re-ranked by float32 "
        "(as cached); int8/uint8 ranges fitted on the sampled documents"
    )
    if plot is not None:
        stderr.print(f"plot: {plot}", highlight=False, markup=False)


def format_table(rows: list[Any]) -> str:
    """Rows as aligned text: the output grid, then the model variant's rows."""
    head = ("model", "dtype", "dims", "bytes/vec", "recall@10", "+rescore", "chunks/s", "vs")
    lines: list[tuple[str, ...]] = [head]
    plain = [r for r in rows if not r.rescore]
    rescored = {(r.model, r.dtype, r.dimensions, r.reference): r for r in rows if r.rescore}
    for r in plain:
        again = rescored.get((r.model, r.dtype, r.dimensions, r.reference))
        speed = f"{r.chunks_per_second:,.0f}" if r.chunks_per_second else ""
        lines.append((r.model, r.dtype, str(r.dimensions), f"{r.bytes_per_vector:,}",
                      f"{r.recall_at_10:.3f}", f"{again.recall_at_10:.3f}" if again else "",
                      speed, r.reference))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
