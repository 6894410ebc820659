"""Progress for long runs: a rich bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("embedgen")


@dataclass
class Counters:
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    cached: int = 0
    computed: int = 0
    skipped: int = 0
    tokenized: int = 0
    """Documents tokenized (the rest were recognised by the document index)."""


class Progress:
    """Shows :class:`Counters` as they grow; ``mode`` is ``bar``, ``log`` or ``off``."""

    def __init__(self, total_docs: int | None, *, mode: str, interval: float = 10.0) -> None:
        self.total = total_docs
        self.mode = mode
        self.interval = interval
        self.started = time.perf_counter()
        self._last_log = self.started
        self._bar: Any = None
        self._task: Any = None
        if mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]embedding"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("docs"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
                refresh_per_second=4,
            )
            self._bar.start()
            self._task = self._bar.add_task("embed", total=total_docs, detail="")

    @staticmethod
    def choose_mode(quiet: bool) -> str:
        if quiet:
            return "off"
        return "bar" if sys.stderr.isatty() else "log"

    def update(self, c: Counters) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = c.tokens / elapsed
        if self._bar is not None:
            detail = f"{c.chunks:,} chunks ({c.cached:,} cached) · {rate:,.0f} tok/s"
            self._bar.update(self._task, completed=c.documents, detail=detail)
            return
        now = time.perf_counter()
        if self.mode == "log" and now - self._last_log >= self.interval:
            self._last_log = now
            log.info(self.line(c, elapsed))

    def line(self, c: Counters, elapsed: float) -> str:
        of = f"/{self.total:,}" if self.total else ""
        eta = ""
        if self.total and c.documents:
            remaining = elapsed * (self.total - c.documents) / c.documents
            eta = f", ETA {remaining:,.0f}s"
        return (
            f"progress: {c.documents:,}{of} documents, {c.chunks:,} chunks "
            f"({c.cached:,} cached, {c.computed:,} computed), {c.tokens / elapsed:,.0f} tokens/s"
            f"{eta}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
