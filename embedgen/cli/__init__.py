"""The ``embedgen`` command: a thin Typer shell over the library.

Each command lives in its own module and is registered below. Errors from the
library are :class:`~embedgen.errors.EmbedgenError`; :func:`main` maps them to a
one-line message and the exit code, in this one place.
"""

from __future__ import annotations

import sys

import typer

from embedgen import __version__
from embedgen.errors import EmbedgenError

app = typer.Typer(
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
    from embedgen.cli import cache_cmd, config_cmd, run_cmd

    for module in (run_cmd, config_cmd, cache_cmd):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run the app, map errors to exit codes."""
    try:
        app(args=argv, standalone_mode=False)
    except EmbedgenError as exc:
        from embedgen.cli.output import error

        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        from embedgen.cli.output import error

        error("interrupted; finished work is kept in the cache, re-run to continue")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
