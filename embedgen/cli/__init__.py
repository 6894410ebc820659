"""The ``embedgen`` command: a thin Typer shell over the library.

Each command lives in its own module and is registered below. Every command runs
inside one logging session (console lines, ``--log-file``, key redaction; see
:mod:`embedgen.cli.output`), and errors from the library,
:class:`~embedgen.errors.EmbedgenError`, become one ``error: ...`` line and the exit
code in :class:`_Group`, in this one place.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from embedgen import __version__
from embedgen.errors import EmbedgenError


class _Group(TyperGroup):
    """Runs every command in one logging session and maps its errors, in one place."""

    def invoke(self, ctx: Any) -> Any:
        from embedgen.cli.output import error, log_unexpected, logging_session, warn

        with logging_session():
            try:
                return super().invoke(ctx)
            except EmbedgenError as exc:
                (warn if exc.warning else error)(str(exc))
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt as exc:  # a run notes what it kept (errors.Kept)
                kept = getattr(exc, "kept", None)
                note = str(kept or "")
                said = f"interrupted ({note})" if note else "interrupted"
                if kept is None or not kept.says_rerun:
                    said += "; re-run the same command to go on"
                error(said)
                raise typer.Exit(130) from None
            except Exception as exc:
                log_unexpected(exc)
                raise

    def get_params(self, ctx: Any) -> list[Any]:
        return _deferred(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _deferred(command.get_params(ctx))  # the options, the help option among them
        return command


def _deferred(params: list[Any]) -> list[Any]:
    """``params`` with typer's coercion built only for values given (:class:`_GivenOnly`)."""
    for param in params:
        built = getattr(param, "get_runtime_param", None)
        if built is not None and not isinstance(built, _GivenOnly):
            param.get_runtime_param = _GivenOnly(built, _takes_text(param))
    return params


class _GivenOnly:
    """Typer's coercion of one parameter (``get_runtime_param``), built only when a value
    is given.

    Typer (0.29) builds a pydantic ``TypeAdapter`` for every parameter of the invoked
    command before it looks at the value, ~2 ms each even where the value is None: 0.1 s
    of each ``embedgen run`` (40 options, a few given). An absent value is None (or ``()``
    for a repeatable one), as typer's own coercion returns it; text given to a plain
    ``str`` parameter is that text, as typer's ``str`` coercion returns it (building its
    first adapter imports another 0.03 s of pydantic); any other value goes through typer's
    coercion unchanged.
    """

    def __init__(self, build: Any, text: bool = False) -> None:
        self._build = build
        self._text = text

    def __call__(self) -> _GivenOnly:
        return self

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        if self._text and isinstance(value, str):
            return value
        return self._build().coerce(value, param=param, ctx=ctx)


def _takes_text(param: Any) -> bool:
    """A single ``str`` (or ``str | None``) value with no parser of its own."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or param.multiple or param.nargs != 1:
        return False
    info = descriptor.parameter_info
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return False
    return descriptor.annotation in (str, str | None)


app = typer.Typer(
    cls=_Group,
    name="embedgen",
    help="Batch-embed document corpora (Parquet/JSONL) into Parquet embeddings.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: rich would import ~0.12 s of modules for it
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
        batches_cmd,
        budget_cmd,
        cache_cmd,
        config_cmd,
        cost_cmd,
        doctor_cmd,
        download_cmd,
        eval_cmd,
        optimize_cmd,
        run_cmd,
        schedule_cmd,
        search_cmd,
    )

    for module in (run_cmd, config_cmd, cache_cmd, doctor_cmd, schedule_cmd, download_cmd):
        module.register(app)
    for module in (cost_cmd, budget_cmd, batches_cmd):
        module.register(app)
    optimize_cmd.register(app)
    eval_cmd.register(app)
    search_cmd.register(app)


_register()


def arrow_pool() -> str:
    """Arrow's memory pool for the ``embedgen`` process: jemalloc where this pyarrow has it
    (its Linux and macOS wheels), else the system allocator.

    pyarrow's default, mimalloc, keeps what a run frees for reuse, and glibc's allocator
    lets a long run's freed buffers fragment: a fully cached run over 1,000,000 short rows
    peaked at 193 MB of anonymous memory with mimalloc, 125-130 MB with the system
    allocator (climbing all run long) and 107 MB with jemalloc (flat), against 100 MB for
    200,000 rows. Read from the build's ``arrow/util/config.h`` without importing pyarrow.
    """
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("pyarrow")
        origin = spec.origin if spec is not None else None
        if origin:
            config = Path(origin).parent / "include" / "arrow" / "util" / "config.h"
            if "#define ARROW_JEMALLOC\n" in config.read_text(errors="replace"):
                return "jemalloc"
    except (OSError, ImportError, ValueError):
        pass
    return "system"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script (``argv`` given: called from Python, as in tests)."""
    import os

    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:  # set before pyarrow is imported
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = arrow_pool()
    try:
        app(args=argv, prog_name="embedgen")
    except SystemExit as exc:
        if argv is None and (exc.code is None or isinstance(exc.code, int)):
            _leave(exc.code or 0)
        raise


def _leave(code: int) -> None:
    """End the process with ``code`` without tearing the interpreter down object by object.

    By now a command has closed what it opened (output, cache, locks, log file); what is
    left is freeing every module and array, about 0.1 s that each nightly re-run would wait
    for. Exit handlers still run and output is flushed; if a thread that is not a daemon is
    still running, the interpreter exits normally and waits for it.
    """
    import atexit
    import contextlib
    import logging
    import os
    import sys
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing can reach it
            stream.flush()
    os._exit(code)
