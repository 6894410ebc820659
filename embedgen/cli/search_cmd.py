"""``embedgen search``: the rows of a run's target nearest a query (did my run work?)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def search(
    target: str = typer.Argument(
        ...,
        help="What a run wrote, as -o names it: a Parquet file or DIR/, lancedb:PATH, "
        "postgresql://...",
    ),
    query: str = typer.Argument(..., help="Text to search for."),
    k: int = typer.Option(10, "-k", min=1, help="How many rows to print."),
    table: str | None = typer.Option(
        None, "--table", help="Table of a lancedb: or postgresql:// target [default: chunks]."
    ),
    where: str | None = typer.Option(
        None, "--filter", help="LanceDB/PostgreSQL: a SQL condition on kept columns."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list of {id, chunk, score, text}, best first."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Config of the run's providers (for an API model)."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="The run's model [default: from the target's metadata]."
    ),
) -> None:
    """Embed QUERY with the model the target was embedded with; print the nearest chunks."""
    from embedgen.pipeline.encoder import encoder_for
    from embedgen.pipeline.search import nearest
    from embedgen.sinks import Target

    with encoder_for(target, table=table, config=config, model=model) as encoder:
        vector = encoder.encode([query])[0]
    hits = nearest(Target.parse(target, table), vector, k, where)
    if as_json:
        rows = [{"id": h.get("id"), "chunk": h.get("chunk"), "score": round(h["score"], 6),
                 "text": h.get("text")} for h in hits]  # fmt: skip
        typer.echo(json.dumps(rows, ensure_ascii=False, default=str))
        return
    for h in hits:
        text = " ".join(str(h.get("text") or "").split())
        snippet = text if len(text) <= 80 else text[:77] + "..."
        typer.echo(f"{h['score']:.4f}  {h.get('id')}  #{h.get('chunk')}  {snippet}")


def register(app: typer.Typer) -> None:
    app.command("search")(search)
