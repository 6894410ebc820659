"""The ``embedgen`` command: a thin Typer shell over the library.

Each command lives in its own module and is registered below. Errors from the
library are :class:`~embedgen.errors.EmbedgenError`; :func:`main` maps them to a
one-line message and the exit code, in this one place.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from embedgen import __version__
from embedgen.errors import EmbedgenError


class _Group(TyperGroup):
    """Maps library errors to a one-line message and an exit code, for every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except EmbedgenError as exc:
            from embedgen.cli.output import error

            error(str(exc))
            import logging

            logging.getLogger("embedgen").error(str(exc), extra={"console": False})
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            from embedgen.cli.output import error

            error("interrupted; embedded chunks are kept in the cache, re-run to continue")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    name="embedgen",
    help="Batch-embed document corpora (Parquet/JSONL) into Parquet embeddings.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"embedgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Batch-embed document corpora (Parquet/JSONL) into Parquet embeddings."""


def _register() -> None:
    # One line per command module; each module defines `register(app)`.
    from embedgen.cli import (
        budget_cmd,
        cache_cmd,
        config_cmd,
        cost_cmd,
        doctor_cmd,
        download_cmd,
        run_cmd,
        schedule_cmd,
    )

    for module in (run_cmd, config_cmd, cache_cmd, doctor_cmd, schedule_cmd, download_cmd):
        module.register(app)
    for module in (cost_cmd, budget_cmd):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    app(args=argv, prog_name="embedgen")
