"""``cost-estimate`` as a library call: a corpus and providers in, one plain dict out.

It runs the pipeline's read, chunk and lookup stages (:mod:`embedgen.pipeline.estimate`)
and prices what ``run`` would embed, instead of embedding it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.config.catalog import PRICES_AS_OF

if TYPE_CHECKING:
    from embedgen.config import Config


def estimate_cost(
    input: str | Path,
    *,
    config: Config | str | Path | None = None,
    providers: list[str] | None = None,
    sample: int | None = None,
    text_column: str | None = None,
    cache_dir: str | Path | None = None,
    output: str | None = None,
    table: str | None = None,
) -> dict[str, Any]:
    """What embedding ``input`` would cost with each provider, as ``--json`` prints it.

    ``output`` (and ``table``): the sink a run would write; the documents it holds
    unchanged cost nothing (one provider, the model the sink holds).

    A config with ``[slots]`` (and no ``providers`` given) prices each slot as the run would
    embed it, on the run's shared chunks, capped by the slot's ``max_cost_usd``, and the
    total; a slot's chain is priced at its first member.
    """
    from embedgen.budget.prices import fmt_usd, to_pico
    from embedgen.budget.report import budget_state, remaining_budget, this_month
    from embedgen.config import Config, apply_overrides, load
    from embedgen.config.slots import slot_config
    from embedgen.pipeline.estimate import count, count_documents, row
    from embedgen.pipeline.read import discover_inputs
    from embedgen.pipeline.targets import build_target, provider_configs

    started = time.perf_counter()
    cfg = config if isinstance(config, Config) else load(config)
    cfg = cfg.model_copy(deep=True)
    apply_overrides(cfg, "run", {"text_column": text_column,
                                 "cache_dir": str(cache_dir) if cache_dir else None})  # fmt: skip
    paths = discover_inputs(input)
    targets = []
    sink: Any = None
    slots = list(cfg.slots) if not providers else []
    accounts: dict[str, str] = {}
    """Target name -> the provider whose budget it spends (a slot's first member)."""
    try:
        if slots:
            for name in slots:
                scfg = slot_config(cfg, name)
                first = scfg.run.providers[0] if scfg.run.providers else "local"
                pcfg = scfg.providers.get(first, scfg.model)
                targets.append(build_target(scfg, name, pcfg))
                accounts[name] = first
        else:
            for name, pcfg in provider_configs(cfg, list(providers or [])):
                targets.append(build_target(cfg, name, pcfg))
        sink = _open_sink(output, table, targets, cfg)
        cache = _open_cache_readonly(cfg)
        try:
            limit = sample if sample is not None else cfg.run.limit
            sieve = _sieve(sink, targets[0], cfg) if sink is not None else None
            counted = count(paths, targets, cfg, cache=cache, limit=limit, shared=bool(slots),
                            sieve=sieve)  # fmt: skip
        finally:
            if cache is not None:
                cache.close()
            if sink is not None:
                sink.close()
    finally:
        for t in targets:
            if t.provider is not None:
                t.provider.close()
    total = counted.documents
    extrapolated = False
    if sample is not None and counted.documents >= sample:
        total = count_documents(paths)
        if cfg.run.limit is not None:
            total = min(total, cfg.run.limit)
        extrapolated = total > counted.documents
    scale = total / counted.documents if extrapolated and counted.documents else 1.0
    caps, state = budget_state(cfg)
    rows = []
    for t in targets:
        remaining, note = remaining_budget(caps, state, accounts.get(t.name, t.name), this_month())
        cap = cfg.slots[t.name].max_cost_usd if t.name in accounts else None
        if cap is not None and (remaining is None or to_pico(cap) < remaining):
            remaining, note = to_pico(cap), f"slot cap {fmt_usd(to_pico(cap))}"
        rows.append(row(t, counted, scale, remaining, note))
        if t.name in accounts:
            rows[-1].update(slot=t.name, provider=accounts[t.name])
    extra = {"total_cost_usd": round(sum(r["cost_usd"] for r in rows), 6)} if slots else {}
    return {
        **extra,
        "input": str(input),
        "documents": total,
        **({"sink": str(sink.target)} if sink is not None else {}),  # str(): no password
        "sample_documents": counted.documents if extrapolated else None,
        "extrapolated": extrapolated,
        "prices_as_of": PRICES_AS_OF,
        "providers": rows,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _open_sink(output: str | None, table: str | None, targets: list[Any], cfg: Config) -> Any:
    """The sink ``output`` names, checked against the one provider priced; None otherwise."""
    from embedgen.errors import UsageError
    from embedgen.sinks import Target

    if output is None:
        return None
    target = Target.parse(output, table)
    if not target.is_sink:
        return None  # a Parquet output: nothing in it is reused
    if len(targets) != 1:
        raise UsageError(
            f"-o {output}: a sink holds one model's vectors; price that one provider "
            "(--provider NAME or a config with one provider)"
        )
    from embedgen.pipeline.sink_write import SinkRun, sink_meta

    meta = sink_meta(targets[0].info, cfg.run)
    return SinkRun(target, meta, overwrite=False, prune=False, index=False)


def _sieve(sink: Any, t: Any, cfg: Config) -> Any:
    """The sink's test of unchanged documents, for documents cut as ``run`` would cut them."""
    from embedgen.cache import fingerprint_id
    from embedgen.pipeline.windows import make_chunker

    return sink.sieve_for(
        fingerprint_id(t.info.fingerprint), make_chunker(t.tokenizer, t.info, cfg.run)
    )


def _open_cache_readonly(cfg: Config) -> Any:
    """The vector cache, read-only, when it exists (an estimate never creates one)."""
    if not cfg.run.use_cache:
        return None
    from embedgen.cache import VectorCache, resolve_cache_dir

    where = resolve_cache_dir(cfg.run.cache_dir)
    if not (where / "data.mdb").is_file():
        return None
    return VectorCache.open(where, readonly=True)
