"""A run with several model slots: one read, one chunking, one vector column per slot.

::

    read + chunk once (SharedChunker: fits every slot) ──► per slot, side by side:
        look up ──► embed the misses ──► store      (the run core's Stages, one per slot)
    ──► write the window's rows with every slot's columns (MultiWriter)

Each slot has its own router (fallback chain, limits, breaker), fingerprint, cache entries
and spend cap; the run's budget covers them all. Per window the slots run at the same
time: an API slot waits on the network while a local model computes, so they overlap;
local models take turns, since each one already uses every core. A window is written only
when every slot has its vectors (all of them committed to the cache), so a stop or a kill
never leaves a half-filled row, and a re-run recomputes nothing committed for any slot.
A slot that fails after its fallbacks stops the run, or with ``--allow-missing`` leaves
its columns null from that window on (exit 4).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from embedgen.errors import BudgetExceeded, ConfigError, EmbedgenError, UsageError
from embedgen.pipeline.core import Stages
from embedgen.pipeline.ends import RunEnds, writer_types
from embedgen.pipeline.multi_write import MultiWriter, SlotColumns, SlotRows
from embedgen.pipeline.progress import Counters
from embedgen.pipeline.shared_chunks import SharedChunker, same_tokens, slot_window
from embedgen.pipeline.spec import RunSpec
from embedgen.pipeline.summary import RunSummary
from embedgen.pipeline.windows import Window, Windows, read_options
from embedgen.pipeline.write import QueuedWrites, window_columns
from embedgen.router import Router

log = logging.getLogger("embedgen")

HEAD_OUTPUTS = ("sparse", "colbert")


class MultiEnds(RunEnds):
    """The run's ends, writing one vector column per slot."""

    def __init__(self, spec: RunSpec, slots: list[SlotColumns], *, mode: str) -> None:
        super().__init__(spec, slots[0].info, mode=mode, columns=(),
                         max_tokens=slots[0].max_tokens)  # fmt: skip
        self.slots = slots

    def open_writer(self, id_type: Any, keep_schema: Any) -> MultiWriter:
        self.writer = writer = MultiWriter(
            self.spec.output, self.slots, with_text=not self.spec.cfg.run.no_text,
            id_type=id_type, keep_schema=keep_schema,
        )  # fmt: skip
        return writer


class MultiRun:
    """The stages of a run with several slots, composed in this process."""

    def __init__(
        self,
        spec: RunSpec,
        names: list[str],
        routers: list[Router],
        slot_runs: list[Any],
        mode: str,
        cache: Any = None,
    ) -> None:
        self.spec = spec
        self.run = run = spec.cfg.run
        self.names, self.routers, self.mode, self.cache = names, routers, mode, cache
        toks = [r.tokenizer() for r in routers]
        limits = [
            min(sr.max_tokens or r.info.max_tokens, r.info.max_tokens)
            for sr, r in zip(slot_runs, routers)
        ]
        self.chunker = SharedChunker(list(zip(toks, limits)), overlap=run.overlap)
        self.windows = Windows(self.chunker, read_options(run), run.limit, None)
        self.stages = [Stages.build(sr, r, cache) for sr, r in zip(slot_runs, routers)]
        self.counters = [Counters() for _ in names]
        self.slots = [
            SlotColumns(
                name,
                r.info,
                sr,
                limit,
                slot_format(name, r.info, sr),
                extras=tuple(c for c in st.columns if c in HEAD_OUTPUTS),
                own_tokens=i > 0 and not same_tokens(toks[i], toks[0]),
            )
            for i, (name, r, sr, limit, st) in enumerate(
                zip(names, routers, slot_runs, limits, self.stages)
            )
        ]
        self.local = [r.info.kind == "onnx" for r in routers]
        self._turn = threading.Lock()
        """Local models take turns: each already uses every core."""
        self.failed: dict[str, tuple[str, int]] = {}
        """Slots that failed under --allow-missing: (error, rows left null)."""
        self.ends: MultiEnds | None = None
        self._writes = QueuedWrites(self._write)

    def execute(self) -> RunSummary:
        from embedgen.pipeline.run import read_ahead

        self.ends = ends = MultiEnds(self.spec, self.slots, mode=self.mode)
        stop = threading.Event()
        pool = ThreadPoolExecutor(len(self.names), thread_name_prefix="embedgen-slot")
        reader = read_ahead(self.windows(list(self.spec.paths)), stop, lambda w: None)
        try:
            for window in reader:
                self._process(window, pool)
            self._writes.drain()
            ends.finish()
        except BaseException as exc:
            reader.close()  # the reader stops and is joined before anything is closed
            self._writes.drain(check=False)
            committed = sum(st.store.committed for st in self.stages)
            ends.failed(exc, committed=committed, cache=self.cache)
            raise
        finally:
            reader.close()
            pool.shutdown(wait=True)
            ends.close()
            for st in self.stages:
                st.close()
        return self._summary(ends)

    def _process(self, w: Window, pool: ThreadPoolExecutor) -> None:
        """Every slot fills its vectors of ``w``; then the window's rows are written."""
        assert self.ends is not None
        self.ends.skips([s.to_json() for s in w.skips])
        if self.ends.writer is None:
            self.ends.open_writer(*writer_types(w.docs, self.run))
        futures = [pool.submit(self._slot, i, w) for i in range(len(self.names))]
        rows: list[SlotRows] = []
        stop: EmbedgenError | None = None
        for i, fut in enumerate(futures):
            try:
                rows.append(fut.result())  # every slot's batches reach the cache, even on a stop
            except EmbedgenError as exc:
                if not self.run.allow_missing or isinstance(exc, BudgetExceeded | UsageError):
                    stop = stop or exc
                    continue
                log.warning(f"slot {self.names[i]} failed ({exc}); its columns are null from here")
                self.failed[self.names[i]] = (str(exc), 0)
                rows.append(self._slot(i, w))
        if stop is not None:
            raise stop
        for name, r in zip(self.names, rows):
            if r.vectors is None:
                msg, n = self.failed[name]
                self.failed[name] = (msg, n + len(w.chunks))
        self._writes.submit(w, rows)
        tokens = sum(c.tokens for c in w.chunks)
        self.ends.counted(w.documents, len(w.chunks), tokens, w.tokenized)

    def _slot(self, i: int, w: Window) -> SlotRows:
        """Slot ``i``'s vectors of ``w``: cached, or embedded and committed to the cache."""
        chunks = slot_window(w.chunks, i)
        tokens = [c.tokens for c in chunks] if self.slots[i].own_tokens else None
        if self.names[i] in self.failed:
            return SlotRows(None, tokens=tokens)
        st = self.stages[i]
        held = st.lookup(chunks, self.counters[i])
        if held.todo:
            self.routers[i].prepare()  # a model loads only when it has a miss to embed
        turn = self._turn if held.todo and self.local[i] else contextlib.nullcontext()
        with turn:
            filled = st.fill([held], self.counters[i])
        vectors, extras = filled.part(0)
        return SlotRows(vectors, extras, tokens)

    def _write(self, w: Window, rows: list[SlotRows]) -> None:
        assert self.ends is not None and isinstance(self.ends.writer, MultiWriter)
        writer = self.ends.writer
        columns, keep = window_columns(
            w, writer.schema, id_column=self.run.id_column, with_text=not self.run.no_text,
            extras={},
        )  # fmt: skip
        writer.write_slots(columns, rows, keep)

    def _summary(self, ends: MultiEnds) -> RunSummary:
        c = ends.counters
        c.cached = sum(x.cached for x in self.counters)
        c.computed = sum(x.computed for x in self.counters)
        c.duplicate = sum(x.duplicate for x in self.counters)
        stats: dict[str, Any] = {}
        for name, r, st, x in zip(self.names, self.routers, self.stages, self.counters):
            if self.cache is not None:
                self.cache.record_run(x.cached, x.computed, st.fp_id)
            stats.update({f"{name}/{k}": v for k, v in r.stats().items()})
        summary = ends.summary(cache=None, fp_id=b"", provider_stats=stats,
                               seconds=time.perf_counter() - ends.started)  # fmt: skip
        summary.model = ", ".join(f"{n}={r.info.model}" for n, r in zip(self.names, self.routers))
        summary.slot_lines = [
            f"slot {n}: {r.info.model} ({r.info.dim}-d), {x.cached:,} cached, "
            f"{x.computed:,} computed, {x.duplicate:,} duplicate"
            for n, r, x in zip(self.names, self.routers, self.counters)
        ]
        summary.missing = [
            f"slot {n} failed ({msg}); its columns are null in {rows:,} rows"
            for n, (msg, rows) in self.failed.items()
        ]
        return summary


def slot_format(name: str, info: Any, run: Any) -> Any:
    """How slot ``name``'s column is written (``--vector-dtype``), known before any row."""
    from embedgen.pipeline.vectors import output_format

    fmt = output_format(info, run, column=f"embedding_{name}")
    if fmt.needs_fit:
        raise UsageError(
            f"slot {name}: --vector-dtype {fmt.dtype} with several models needs its ranges "
            "known before the first row (--calibration FILE, or an API that answers "
            f"{fmt.dtype}); or write float32 and convert"
        )
    return fmt


def check_slot(name: str, info: Any, run: Any, outputs: Sequence[str]) -> None:
    """Refuse, before any request, a slot whose chain cannot give what it is asked for."""
    if run.dimensions is not None and info.dim != run.dimensions:
        raise ConfigError(
            f"slot {name}: dimensions {run.dimensions} does not match the {info.dim}-d "
            f"vectors of {info.name} ({info.model}); set the slot's dimensions or its provider's"
        )
    heads = [o for o in outputs if o in HEAD_OUTPUTS]
    if heads and info.kind != "onnx":
        raise ConfigError(f"slot {name}: outputs {heads} need a local model with bge-m3's heads")


def run_multi(spec: RunSpec, mode: str) -> RunSummary:
    """Run ``spec``'s slots in this process, holding the output lock."""
    from embedgen.config.slots import slot_config
    from embedgen.pipeline.run import open_cache, remove_stale_tmp
    from embedgen.pipeline.run_budget import RunBudget
    from embedgen.util.locks import acquire_output_lock

    cfg = spec.cfg
    names = list(cfg.slots)
    configs = [slot_config(cfg, n) for n in names]
    with acquire_output_lock(spec.output):
        remove_stale_tmp(spec.output)
        chains: list[list[Any]] = []
        budget: RunBudget | None = None
        status = "failed"
        try:
            for name, c in zip(names, configs):  # every slot loads before any request
                chains.append(build_slot(name, c, cfg.slots[name].outputs))
            budget = RunBudget.open(cfg, [m.info for chain in chains for m in chain])
            routers = [
                Router(chain, allow_mixed_models=False, spend=slot_spend(budget, n, cfg))
                for n, chain in zip(names, chains)
            ]
            cache = open_cache(cfg.run)
            try:
                run = MultiRun(spec, names, routers, [c.run for c in configs], mode, cache)
                summary = run.execute()
                status = "finished"
                summary.budget_lines = budget.lines()
                return summary
            except BudgetExceeded:
                status = "stopped on budget"
                raise
            finally:
                if cache is not None:
                    cache.close()
        finally:
            if budget is not None:
                budget.close(status)
            for chain in chains:
                for m in chain:
                    m.close()


def build_slot(name: str, cfg: Any, outputs: Sequence[str]) -> list[Any]:
    """Slot ``name``'s chain, checked; a model that cannot load is a config error (exit 2)."""
    from embedgen.errors import ModelError
    from embedgen.router.build import build_members

    try:
        members = build_members(cfg)
    except (ModelError, UsageError) as exc:
        raise ConfigError(f"slot {name}: {exc}") from None
    try:
        check_slot(name, members[0].info, cfg.run, outputs)
    except BaseException:
        for m in members:
            m.close()
        raise
    return members


def slot_spend(budget: Any, name: str, cfg: Any) -> Any:
    """The router's spend account: the run's budget, behind the slot's own cap if it has one."""
    cap = cfg.slots[name].max_cost_usd
    if budget.budget is None or cap is None:
        return budget.budget
    from embedgen.budget.slot_cap import SlotCap

    return SlotCap(budget.budget, name, cap)
