"""Batch mode as a pre-pass of ``run``: every miss into the cache before the normal run.

When the run's first provider has ``mode = "batch"``, the run calls :func:`batch_prepass`
with a ``scan``: its own read, chunk and lookup stages yielding the corpus's cache misses
(same chunker, same cache keys; the pipeline builds it, as batch/ sits below pipeline/).
The pre-pass submits the distinct misses as batch jobs, waits for them (or raises
:class:`~embedgen.errors.BatchesPending` with ``wait=False``) and collects them into the
vector cache. The normal run that follows finds every chunk cached and writes the output
exactly as usual; only chunks that no batch could embed reach the synchronous API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.batch.pack import Item
from embedgen.errors import ConfigError, ProviderError, UsageError

if TYPE_CHECKING:
    from embedgen.batch.runner import BatchSummary
    from embedgen.config import ApiConfigBase, Config

log = logging.getLogger("embedgen")


def batch_member(cfg: Config) -> tuple[str, ApiConfigBase] | None:
    """(name, config) of the run's provider in batch mode; None when there is none."""
    names = list(cfg.run.providers or ["local"])
    batch = [n for n in names if getattr(cfg.providers.get(n), "mode", "sync") == "batch"]
    if not batch:
        return None
    if batch != names[:1]:
        raise ConfigError(
            f"providers.{batch[-1]}.mode: only the first provider of run.providers can use "
            '"batch" (the others are its synchronous fallbacks)'
        )
    return names[0], cfg.providers[names[0]]  # type: ignore[return-value]


def batch_price(pcfg: ApiConfigBase) -> float:
    """USD per 1M tokens through the batch API (config, catalog, or half the sync price)."""
    if pcfg.batch_price_per_mtok is not None:
        return pcfg.batch_price_per_mtok
    if pcfg.price_per_mtok is None:
        from embedgen.config.catalog import batch_price as listed

        found = listed(pcfg.kind, pcfg.model)
        if found is not None:
            return found
    return pcfg.price() / 2


def batch_prepass(
    cfg: Config,
    cache: Any,
    scan: Callable[[], Iterable[Item]],
    *,
    fingerprint: str,
    wait: bool = True,
    output: Path | None = None,
    notify: Callable[[str], None] | None = None,
) -> BatchSummary | None:
    """Embed ``scan``'s misses through the batch API into ``cache``; None if not batch mode.

    ``fingerprint`` is the run's model fingerprint: the scan's keys are made with it.
    """
    found = batch_member(cfg)
    if found is None:
        return None
    name, pcfg = found
    if cache is None:
        raise UsageError(
            f'providers.{name}.mode = "batch" collects vectors into the cache: it cannot run '
            "with --no-cache (or run.use_cache = false)"
        )
    if cfg.run.allow_mixed_models and len(cfg.run.providers) > 1:
        raise UsageError(
            f'providers.{name}.mode = "batch" needs the cache, which allow_mixed_models '
            "turns off; drop one of them"
        )
    from embedgen.batch.client import build_client
    from embedgen.batch.journal import Journal
    from embedgen.batch.runner import BatchOptions, BatchRunner
    from embedgen.cache import fingerprint_id, resolve_cache_dir

    client = build_client(name, pcfg)
    try:
        info = client.provider.info
        if info.fingerprint != fingerprint:
            raise ProviderError(
                f"{name}: the run's model fingerprint differs from the batch provider's; "
                "batch mode needs the batch provider first in run.providers"
            )
        fp_id = fingerprint_id(info.fingerprint)
        cache.register_model(fp_id, info.fingerprint, info.model, info.dim, cfg.run.dtype,
                             normalized=info.unit_vectors)  # fmt: skip
        price = batch_price(pcfg)
        spend = None
        if price > 0:
            from embedgen.budget.pending import BatchSpend

            spend = BatchSpend.from_config(cfg)
        options = BatchOptions(
            wait=wait,
            poll_interval=pcfg.batch_poll,
            poll_max=max(pcfg.batch_poll, pcfg.batch_poll_max),
            output=str(output) if output is not None else None,
        )
        runner = BatchRunner(
            client, cache, Journal(resolve_cache_dir(cfg.run.cache_dir)), spend,
            fingerprint=info.fingerprint, fp_id=fp_id, dim=info.dim, price=price,
            options=options, notify=notify,
        )  # fmt: skip
        return runner.run(scan)
    finally:
        client.close()
