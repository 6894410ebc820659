"""``embedgen run``: embed a corpus into a Parquet file."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from embedgen.errors import MissingColumns, SkippedDocuments

if TYPE_CHECKING:
    from embedgen.cli.report import RunReport
    from embedgen.config import Config


def run(
    input: str = typer.Argument(
        ..., help="Parquet or JSONL file (.jsonl/.ndjson, optionally .gz), directory or glob."
    ),
    output: str | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Output: a Parquet file, DIR/ (--engine ray), lancedb:PATH or postgresql://... "
        "[default: <input stem>.embeddings.parquet beside the input].",
    ),
    table: str | None = typer.Option(
        None, "--table", help="Table of a lancedb: or postgresql:// output [default: chunks]."
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Sink: also delete documents that are no longer in the input."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Sink: replace a table of another model, dimension or columns."
    ),
    index: bool = typer.Option(
        False, "--index", help="Sink: build the store's vector index after the load."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file; options given here override it."
    ),
    model: list[str] | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model folder, .onnx file or downloaded model name "
        "[default: embedded all-MiniLM-L6-v2 int8]; NAME=SPEC (repeatable) embeds with several "
        "models in one pass, one column embedding_NAME each (SPEC may name a [providers] table).",
    ),
    text_column: str | None = typer.Option(
        None, "--text-column", help="Column with the text [default: text]."
    ),
    id_column: str | None = typer.Option(
        None,
        "--id-column",
        help="Column with document ids [default: id when every input has it, else row numbers].",
    ),
    keep: str | None = typer.Option(
        None, "--keep", help="Comma-separated input columns to copy to every chunk row."
    ),
    no_text: bool = typer.Option(
        False, "--no-text", help="Do not store chunk texts in the output."
    ),
    max_tokens: int | None = typer.Option(
        None,
        "--max-tokens",
        help="Tokens per chunk, special tokens included [default: the model's limit].",
    ),
    overlap: int | None = typer.Option(
        None, "--overlap", help="Tokens shared by consecutive chunks [default: 0]."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Most chunks per model call [default: 32]."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda or directml [default: auto]."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="CPU threads for the model: intra-op, or calls side by side [default: all cores].",
    ),  # fmt: skip
    limit: int | None = typer.Option(None, "--limit", help="Embed only the first N documents."),
    dimensions: int | None = typer.Option(
        None, "--dimensions", help="Truncate vectors to N dimensions and renormalise (Matryoshka)."
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32 or float16: vectors as cached [default: float32]."
    ),
    vector_dtype: str | None = typer.Option(
        None,
        "--vector-dtype",
        help="Output type: float32, float16, int8, uint8, binary or ubinary; the cache "
        "keeps --dtype [default: --dtype].",
    ),
    calibration: str | None = typer.Option(
        None, "--calibration", help="int8/uint8: reuse the ranges of this embedgen Parquet file."
    ),
    force: bool = typer.Option(
        False, "--force", help="Allow --dimensions on a model not trained for truncation."
    ),
    on_error: str | None = typer.Option(
        None, "--on-error", help="fail or skip malformed JSONL lines [default: fail]."
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Vector cache directory [default: $EMBEDGEN_CACHE_DIR or the user cache dir].",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Neither read nor write the vector cache."
    ),
    log_file: str | None = typer.Option(
        None,
        "--log-file",
        help="Also log to this rotating plain-text file; {date} becomes YYYY-MM-DD.",
    ),
    sparse: bool = typer.Option(
        False, "--sparse", help="Add a `sparse` column of lexical weights (bge-m3 sparse head)."
    ),
    max_cost: float | None = typer.Option(
        None, "--max-cost", help="Stop (exit 3) before this run spends more than USD on APIs."
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help='mode = "batch": submit the batch jobs and exit 6 (collect later).'
    ),
    engine: str | None = typer.Option(
        None, "--engine", help="local (this process) or ray (Ray Data) [default: local]."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join [default: $RAY_ADDRESS, else start one]."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Ray embedding workers [default: from the cluster's resources]."
    ),
    cpus_per_worker: float | None = typer.Option(
        None, "--cpus-per-worker", help="CPUs each Ray worker reserves (its onnxruntime threads)."
    ),
    gpus_per_worker: float | None = typer.Option(
        None, "--gpus-per-worker", help="GPUs each Ray worker reserves (0.5: two per GPU)."
    ),
    allow_missing: bool = typer.Option(
        False,
        "--allow-missing",
        help="With several models: a model that fails after its fallbacks gets null columns "
        "(exit 4) instead of stopping the run.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary."),
    report: str | None = typer.Option(
        None,
        "--report",
        help="Write a JSON report of the run here, on success and on failure "
        "(docs/report.md); {date} becomes YYYY-MM-DD.",
    ),
    keep_reports: int | None = typer.Option(
        None, "--keep-reports", min=1, help="Keep only the newest N reports of a {date} pattern."
    ),
) -> None:
    """Embed a corpus into a Parquet file of chunk embeddings, or into a vector store."""
    started = time.perf_counter()  # the summary's seconds count from the command's start
    from embedgen.cli.output import add_log_file, set_quiet
    from embedgen.cli.report import RunReport
    from embedgen.config import load
    from embedgen.config.slots import add_cli_slots, parse_model_args

    record = RunReport(report, keep_reports, input=input, output=output) if report else None
    set_quiet(quiet)
    try:
        if log_file:  # before the config, so a bad config is logged too
            add_log_file(log_file)
        cfg = load(config)
        if not log_file and cfg.run.log_file:
            add_log_file(cfg.run.log_file)
        plain, slots = parse_model_args(model or [])
        add_cli_slots(cfg, slots)
        if record is not None:
            record.cache_dir = str(cache_dir) if cache_dir else cfg.run.cache_dir
        options = {
            "text_column": text_column,
            "id_column": id_column,
            "keep": [c.strip() for c in keep.split(",") if c.strip()] if keep else None,
            "no_text": no_text or None,
            "max_tokens": max_tokens,
            "overlap": overlap,
            "batch_size": batch_size,
            "device": device,
            "threads": threads,
            "limit": limit,
            "dimensions": dimensions,
            "dtype": dtype,
            "vector_dtype": vector_dtype,
            "calibration": calibration,
            "force_dimensions": force or None,
            "on_error": on_error,
            "cache_dir": str(cache_dir) if cache_dir else None,
            "use_cache": False if no_cache else None,
            "sparse": sparse or None,
            "max_cost_usd": max_cost,
            "engine": engine,
            "ray_address": ray_address,
            "workers": workers,
            "cpus_per_worker": cpus_per_worker,
            "gpus_per_worker": gpus_per_worker,
            "batch_wait": False if no_wait else None,
            "table": table,
            "prune": prune or None,
            "overwrite": overwrite or None,
            "index": index or None,
            "allow_missing": allow_missing or None,
        }
        _embed_and_report(input, output, cfg, plain, quiet, options, started, record)
    except BaseException as exc:
        if record is not None:
            record.failed(exc)
        raise


def _embed_and_report(
    input: str,
    output: str | None,
    cfg: Config,
    model: str | None,
    quiet: bool,
    options: dict[str, Any],
    started: float,
    record: RunReport | None,
) -> None:
    from embedgen.cli.output import stderr
    from embedgen.engines import embed_corpus

    summary = embed_corpus(input, output, config=cfg, model=model, quiet=quiet, **options)
    summary.timed(started)
    if not quiet:
        for line in summary.lines():
            stderr.print(line, highlight=False, markup=False)
    logging.getLogger("embedgen").info(
        "summary: " + "; ".join(" ".join(x.split()) for x in summary.lines()),
        extra={"console": False},
    )
    skipped: SkippedDocuments | MissingColumns | None = None
    if summary.missing:
        skipped = MissingColumns(
            "; ".join(summary.missing) + ": re-run without --allow-missing to fill them"
        )
    elif summary.skipped:
        skipped = SkippedDocuments(
            f"{summary.skipped} document(s) skipped (null, empty or malformed); "
            f"see {summary.skipped_path}"
        )
    if record is not None:
        record.write(
            exit_code=4 if skipped else 0,
            message=str(skipped) if skipped else None,
            summary=summary,
        )
    if skipped is not None:
        raise skipped


def register(app: typer.Typer) -> None:
    app.command("run")(run)
