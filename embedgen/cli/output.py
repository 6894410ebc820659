"""The CLI's one place for console and log output.

Every command runs inside :func:`logging_session` (entered once, in
:mod:`embedgen.cli`): records of the ``embedgen`` logger go to stderr, keys are
redacted, and log files attached with :func:`add_log_file` stay open until the
command's error, if any, has been written to them. :func:`error` prints the one
``error: ...`` line of a failure and records it in those files.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from embedgen.redact import redact

if TYPE_CHECKING:
    from rich.console import Console

LOGGER_NAME = "embedgen"


class _Stderr:
    """rich's console on stderr, made when first printed to: importing rich is 15 ms that
    a quiet run, which prints nothing, does not spend."""

    _console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if _Stderr._console is None:
            from rich.console import Console

            _Stderr._console = Console(stderr=True, highlight=False)
        return getattr(_Stderr._console, name)


stderr = cast("Console", _Stderr())


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


_log_files: list[logging.Handler] = []


def error(message: str) -> None:
    """Print a one-line error to stderr and record it in the open log files."""
    text = redact(message)
    stderr.print("[bold red]error:[/] " + escape(text), markup=True, soft_wrap=True)
    if _log_files:
        logging.getLogger(LOGGER_NAME).error(text, extra={"console": False})


def warn(message: str) -> None:
    """Print a one-line warning to stderr and record it in the open log files."""
    text = redact(message)
    stderr.print("[yellow]warning:[/] " + escape(text), markup=True, soft_wrap=True)
    if _log_files:
        logging.getLogger(LOGGER_NAME).warning(text, extra={"console": False})


def log_unexpected(exc: BaseException) -> None:
    """Record an unexpected exception in the open log files (the console gets the traceback)."""
    if _log_files:
        logging.getLogger(LOGGER_NAME).error(
            "unexpected error: %s: %s", type(exc).__name__, exc, extra={"console": False}
        )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _console_only(record: logging.LogRecord) -> bool:
    return bool(getattr(record, "console", True))


@contextmanager
def logging_session() -> Iterator[None]:
    """Console logging for one command; closes its log files and restores the logger."""
    from embedgen.redact import install

    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.level, logger.propagate)
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    handler.setLevel(logging.INFO)
    handler.addFilter(_console_only)
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    install(logger)
    try:
        yield
    finally:
        close_log_files()
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def set_quiet(quiet: bool) -> None:
    """Show only warnings and errors on the console (log files keep INFO)."""
    for h in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(h, _StderrHandler):
            h.setLevel(logging.WARNING if quiet else logging.INFO)


def add_log_file(path: str | Path) -> None:
    """Also log to ``path`` (see :func:`embedgen.logfile.setup_log_file`) until the
    command ends, its error included."""
    from embedgen.logfile import setup_log_file

    _log_files.append(setup_log_file(path))


def close_log_files() -> None:
    """Detach and close the log files of the command."""
    if not _log_files:
        return  # most commands have none: nothing to import
    from embedgen.logfile import remove_log_file

    while _log_files:
        remove_log_file(_log_files.pop())
