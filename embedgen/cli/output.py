"""Shared console helpers for the CLI: one stderr console, one-line errors."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

stderr = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    """Print a one-line error to stderr."""
    stderr.print("[bold red]error:[/] " + escape(message), markup=True, soft_wrap=True)


def warn(message: str) -> None:
    stderr.print("[yellow]warning:[/] " + escape(message), markup=True, soft_wrap=True)
