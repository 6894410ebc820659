"""``embedgen doctor``: one line per environment check; exit 1 if any fails."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_MARK = {"pass": ("PASS", "green"), "warn": ("WARN", "yellow"), "fail": ("FAIL", "bold red")}


def doctor(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Config file to validate and check (device, model, keys)."
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Cache folder to check [default: run.cache_dir, "
        "EMBEDGEN_CACHE_DIR or the user cache dir].",
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", help="Folder the output will be written to [default: current folder]."
    ),
    verify_hashes: bool = typer.Option(
        False,
        "--verify-hashes",
        help="Check downloaded models' sha256 too (slow for large models).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check Python, onnxruntime, the device, models, folders, config and API key variables.

    One line per check (pass, warn or fail); exits 1 when any check fails.
    """
    from rich.console import Console
    from rich.markup import escape

    from embedgen.doctor import DoctorOptions, run_checks, worst

    checks = run_checks(
        DoctorOptions(
            config=config, cache_dir=cache_dir, output_dir=output_dir, verify_hashes=verify_hashes
        )
    )
    status = worst(checks)
    if as_json:
        payload = {"status": status, "checks": [c.to_dict() for c in checks]}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        console = Console(highlight=False, soft_wrap=True)
        for c in checks:
            word, style = _MARK[c.status]
            console.print(f"[{style}]{word}[/] {escape(c.name)}: {escape(c.detail)}")
        counts = {s: sum(c.status == s for c in checks) for s in _MARK}
        console.print(
            f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed"
        )
    if status == "fail":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
