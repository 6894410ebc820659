"""What a run did, as the summary lines the CLI prints and the library returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedgen.util.storage import uri


@dataclass
class RunSummary:
    output: Path | None
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    skipped: int = 0
    cached: int = 0
    computed: int = 0
    duplicate: int = 0
    """Chunks copied from another chunk of the run with the same text (cached + computed +
    duplicate = chunks)."""
    seconds: float = 0.0
    """Wall time of the whole run (see :meth:`timed`)."""
    embed_seconds: float = 0.0
    """Of which reading, embedding and writing: without model preparation or Ray start-up."""
    skipped_path: Path | None = None
    model: str = ""
    dim: int = 0
    provider_stats: dict[str, Any] = field(default_factory=dict)
    """Per API provider: requests, retries, failures, breaker openings, tokens, seconds."""
    mixed_models: bool = False
    budget_lines: list[str] = field(default_factory=list)
    """What the run spent, per provider (when any provider has a price)."""
    damaged: int = 0
    """Damaged cache values the run read, ignored and recomputed."""
    tokenized: int = 0
    """Documents tokenized; an unchanged re-run with the cache tokenizes none."""
    target: str | None = None
    """The sink the rows went into (a LanceDB or PostgreSQL table), if not a file."""
    sink_lines: list[str] = field(default_factory=list)
    """What the run did to the sink: unchanged, written and pruned documents, the index."""
    slot_lines: list[str] = field(default_factory=list)
    """A run with several model slots: each slot's model, cached and computed chunks."""
    missing: list[str] = field(default_factory=list)
    """Slots that failed under ``--allow-missing`` (their columns are null)."""
    up_to_date: bool = False
    """The output already held this run's rows (``pipeline.up_to_date``): nothing was read,
    embedded or written."""

    @classmethod
    def of(
        cls,
        c: Any,
        *,
        output: Path,
        skipped_path: Path,
        info: Any,
        seconds: float = 0.0,
        provider_stats: dict[str, Any] | None = None,
        mixed_models: bool = False,
        target: str | None = None,
        sink_lines: list[str] | None = None,
    ) -> RunSummary:
        """The summary of a run from its counters and its chain's metadata (any engine)."""
        return cls(
            output=output,
            documents=c.documents,
            chunks=c.chunks,
            tokens=c.tokens,
            skipped=c.skipped,
            cached=c.cached,
            computed=c.computed,
            duplicate=c.duplicate,
            seconds=seconds,
            skipped_path=skipped_path if c.skipped else None,
            model=info.model,
            dim=info.dim,
            provider_stats=provider_stats or {},
            mixed_models=mixed_models,
            tokenized=c.tokenized,
            target=target,
            sink_lines=sink_lines or [],
        )

    def timed(self, started: float) -> None:
        """Report wall time since ``started`` (``time.perf_counter()``), the run's own part kept."""
        import time

        self.embed_seconds = self.embed_seconds or self.seconds
        self.seconds = max(time.perf_counter() - started, self.seconds)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = self._lines()
        for name, st in self.provider_stats.items():
            out.append(
                f"provider {name}: {st.requests:,} requests, {st.retries:,} retries, "
                f"{st.failures:,} failures ({st.rate_limited:,} rate-limited), "
                f"{st.breaker_openings:,} breaker openings, {st.tokens:,} tokens, "
                f"{st.seconds:,.1f}s"
            )
        out.extend(self.budget_lines)
        if self.mixed_models:
            out.append("warning: rows were embedded by different models (see the model column)")
        if self.damaged:
            out.append(f"warning: {self.damaged:,} damaged cache values were ignored and "
                       "recomputed; run `embedgen cache verify --fix`")  # fmt: skip
        return out

    def _lines(self) -> list[str]:
        out = [
            f"documents: {self.documents:,}",
            f"chunks:    {self.chunks:,} ({self.cached:,} cached, {self.computed:,} computed, "
            f"{self.duplicate:,} duplicate)",
            f"tokens:    {self.tokens:,}",
            f"skipped:   {self.skipped:,}"
            + (f" (listed in {uri(self.skipped_path)})" if self.skipped_path else ""),
            f"seconds:   {self.seconds:,.1f} ({self.chunks_per_s:,.1f} chunks/s"
            + (
                f"; {self.embed_seconds:,.1f} reading, embedding and writing)"
                if self.embed_seconds and not self.up_to_date
                else ")"
            ),
            *(self.slot_lines or [f"model:     {self.model} ({self.dim}-d)"]),
            f"output:    {self.target or (uri(self.output) if self.output is not None else None)}",
            *self.sink_lines,
        ]
        if self.up_to_date:
            out.append("up to date: the output was written by this run over these inputs "
                       "(rerun_unchanged = true writes it again)")  # fmt: skip
        return out + [f"warning: {m}" for m in self.missing]
