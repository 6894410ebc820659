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
    """Chunks found in the cache."""
    duplicate: int = 0
    """Chunks whose text another chunk of the run embeds: copied, not embedded again."""
    computed: int = 0
    """Chunks embedded. cached + duplicate + computed = chunks, on every engine."""
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
        self._since: tuple[float, int, int] | None = None
        self._bar: Any = None
        self._task: Any = None
        if mode == "bar":
            from rich.console import Console
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
                # where choose_mode looked, and where every message goes: a bar on stdout
                # (rich's default) landed in a piped stdout, and messages on the terminal's
                # stderr were not drawn above it
                console=Console(stderr=True, highlight=False),
            )
            self._bar.start()
            self._task = self._bar.add_task("embed", total=total_docs, detail="")

    @staticmethod
    def choose_mode(quiet: bool) -> str:
        if quiet:
            return "off"
        return "bar" if sys.stderr.isatty() else "log"

    def update(self, c: Counters) -> None:
        now = time.perf_counter()
        if self._since is None and c.computed:
            # rates count from the first embedded chunk: cached windows read at disk speed
            # would otherwise start the average at 176k tok/s and make it jump
            self._since = (now, c.documents, c.computed)
        if self._bar is not None:
            self._bar.update(self._task, completed=c.documents, detail=self.detail(c, now))
            return
        if self.mode == "log" and now - self._last_log >= self.interval:
            self._last_log = now
            log.info(self.line(c, now))

    def _rates(self, c: Counters, now: float) -> tuple[float, float]:
        """(computed chunks/s, documents/s) since the first computed chunk; 0 before."""
        if self._since is None or now <= self._since[0]:
            return 0.0, 0.0
        t0, d0, k0 = self._since
        return (c.computed - k0) / (now - t0), (c.documents - d0) / (now - t0)

    def detail(self, c: Counters, now: float) -> str:
        """The bar's text: the chunks by how they were made, the embedding rate."""
        rate, _ = self._rates(c, now)
        done = c.cached + c.computed + c.duplicate  # looked up or embedded, maybe not written
        return (
            f"{done:,} chunks ({c.cached:,} cached, {c.computed:,} computed, "
            f"{c.duplicate:,} duplicate) · {rate:,.1f} chunks/s"
        )

    def line(self, c: Counters, now: float) -> str:
        """A progress log line; the ETA at the documents/s seen since embedding began."""
        of = f"/{self.total:,}" if self.total else ""
        _, docs_rate = self._rates(c, now)
        eta = ""
        if self.total and docs_rate > 0:
            eta = f", ETA {(self.total - c.documents) / docs_rate:,.0f}s"
        return f"progress: {c.documents:,}{of} documents, {self.detail(c, now)}{eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
