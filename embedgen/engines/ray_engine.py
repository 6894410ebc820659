"""The Ray engine: the local engine's stages on Ray Data, across cores, GPUs and machines.

::

    read units (driver) -> chunk tasks (map_batches, the Windows stage)
        -> embedding actor pool (map_batches, lookup/embed/store stages, one router each)
        -> driver: reorder windows -> write (one Parquet file, or a dataset directory)

Nothing is ordered by Ray (``preserve_order`` stays off, so a slow block never stalls
the pool): every row carries its order key and the driver puts windows back in input
order, spilling early ones to disk beyond a bound. Rate limits, the budget and provider
statistics of hosted APIs live in one named actor (:mod:`.ray_limits`).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import logging
import os
import re
import time
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from embedgen.engines.ray_cluster import RayCluster, import_ray, import_ray_data
from embedgen.engines.ray_plan import EngineOptions, WorkerPlan, plan_workers
from embedgen.errors import BudgetExceeded, EmbedgenError, WorkerLost

if TYPE_CHECKING:
    from embedgen.pipeline.summary import RunSummary

log = logging.getLogger("embedgen")

WORKER_RESTARTS = 3
"""How often Ray restarts a dead embedding worker (and retries its block) before the run
stops: a block is embedded again from the cache, so a retry never pays twice."""


def worker_error(exc: BaseException) -> BaseException:
    """The embedgen error behind a failure that Ray wrapped on its way from a worker; a
    worker that died past its restarts becomes :class:`WorkerLost`."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    died: BaseException | None = None
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # a RayTaskError's original exception
        if isinstance(cause, EmbedgenError):
            return cause
        if isinstance(e, EmbedgenError):
            return e
        if died is None and type(e).__name__ in ("ActorDiedError", "RayActorError"):
            died = e
        todo.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    if died is not None:
        how = re.search(r"Worker exit type: (\w+)", str(died))
        return WorkerLost(
            f"a Ray embedding worker died after {WORKER_RESTARTS} restarts "
            f"({how.group(1) if how else type(died).__name__}: killed, out of memory or "
            "crashed); every block the workers finished is in the cache: run the same "
            "command again to resume"
        )
    return exc


_PASSED_ENV = ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "HF_HOME", "HF_HUB_OFFLINE")


def worker_env(cfg: Any) -> dict[str, str]:
    """Environment the workers need from the driver: embedgen's directories (sent in the
    job's Ray runtime environment, which Ray logs; never a key, see :func:`api_keys`)."""
    keys = api_keys(cfg)
    names = {k for k in os.environ if k.startswith("EMBEDGEN_")} | set(_PASSED_ENV)
    return {k: os.environ[k] for k in sorted(names - keys.keys()) if k in os.environ}


def api_keys(cfg: Any) -> dict[str, str]:
    """The API key variables the config names, with their values: handed to the embedding
    actors' constructors in memory, never in a runtime environment (Ray writes those to
    ``runtime_env_agent.log``, readable by every user of the machine)."""
    names = {getattr(p, "api_key_env", None) for p in cfg.providers.values()}
    return {k: os.environ[k] for k in sorted(n for n in names if n) if k in os.environ}


def _open_budget(cfg: Any, infos: list[Any]) -> Any:
    """The run's budget, opened inside the limits actor (on the driver's node)."""
    from embedgen.pipeline.run_budget import RunBudget

    return RunBudget.open(cfg, infos)


def run_ray(spec: Any, mode: str, engine: EngineOptions, *, dataset: bool = False) -> RunSummary:
    """Run ``spec`` on Ray, holding the output lock; returns the local engine's RunSummary."""
    from embedgen.pipeline.run import remove_stale_tmp
    from embedgen.util.locks import acquire_output_lock

    ray = import_ray()
    out = spec.output
    with acquire_output_lock(out), RayCluster(ray, engine.address) as cluster:
        import_ray_data()  # while Ray starts
        remove_stale_tmp(out)
        summary: RunSummary = _RayRun(cluster, spec, engine, mode, dataset=dataset).execute()
        return summary


class _RayRun:
    def __init__(
        self, cluster: RayCluster, spec: Any, engine: EngineOptions, mode: str, *, dataset: bool
    ) -> None:
        from embedgen.pipeline.spec import extra_columns

        self.cluster = cluster
        self.ray = cluster.ray
        self.spec = spec
        self.engine = engine
        self.mode = mode
        self.dataset = dataset
        self.run = spec.cfg.run
        self.columns = extra_columns(self.run)
        self.run_id = uuid.uuid4().hex[:12]

    def execute(self) -> Any:
        from embedgen.config import apply_overrides
        from embedgen.router import Router
        from embedgen.router.build import build_members

        started = time.perf_counter()
        # The driver's own copy of the chain, on the CPU: metadata, tokenizer, stop messages.
        local_cfg = self.spec.cfg.model_copy(deep=True)
        apply_overrides(local_cfg, "model", {"device": "cpu", "num_threads": 1})
        members = build_members(local_cfg)
        self.local_cfg = local_cfg
        status = "failed"
        actor = None
        try:
            router = Router(members, allow_mixed_models=self.run.allow_mixed_models)
            batches = self._batch_prepass(router)
            plan = plan_workers(self.engine, self.cluster.wait().cluster_resources())
            log.info(f"ray: {plan.describe()}", extra={"console": False})
            actor = self._start_limits(members)
            try:
                summary: RunSummary = self._pipeline(router, actor, plan)
            except BaseException as exc:
                err = worker_error(exc)
                if isinstance(err, BudgetExceeded):
                    status = "stopped on budget"
                    raise self._explain(err, router, actor) from None
                if err is not exc:
                    raise err from None
                raise
            status = "finished"
            summary.seconds = time.perf_counter() - started
            if actor is not None:
                summary.budget_lines = self.ray.get(actor.budget_lines.remote())
            summary.budget_lines += batches.lines() if batches is not None else []
            return summary
        finally:
            if actor is not None:
                try:
                    self.ray.get(actor.budget_close.remote(status))
                finally:
                    self.ray.kill(actor)
            for m in members:
                m.close()

    def _batch_prepass(self, router: Any) -> Any:
        """``mode = "batch"``: the local engine's pre-pass, on the driver before any worker
        starts, so the workers find the batch-priced vectors in the cache."""
        from embedgen.batch.prepass import batch_member
        from embedgen.pipeline.run import LocalRun, batch_prepass_of, open_cache

        if batch_member(self.spec.cfg) is None:
            return None
        cache = open_cache(self.run)
        scan = None
        try:
            scan = LocalRun(self.spec, router, "off", cache)
            return batch_prepass_of(scan)
        finally:
            if scan is not None:
                scan.stages.close()
            if cache is not None:
                cache.close()

    def _start_limits(self, members: list[Any]) -> Any:
        """The run's global limits actor, when any member is an API or has a price."""
        from embedgen.engines import ray_limits

        infos = [m.info for m in members]
        priced = any(i.price_per_mtok > 0 for i in infos)
        if not priced and not any(m.reliable for m in members):
            return None
        limits = {
            m.info.name: (m.settings.rpm, m.settings.tpm) for m in members if m.settings is not None
        }
        factory = functools.partial(_open_budget, self.spec.cfg, infos) if priced else None
        return ray_limits.start(self.run_id, limits, factory, env=worker_env(self.spec.cfg))

    def _explain(self, exc: BudgetExceeded, router: Any, actor: Any) -> BudgetExceeded:
        """The stop message with what remains to embed, as the local engine gives it."""
        from embedgen.pipeline.run import open_cache
        from embedgen.pipeline.run_budget import RunBudget

        msg = self.ray.get(actor.budget_stop_message.remote()) if actor is not None else None
        if msg is None:
            return exc
        cache = open_cache(self.run)
        try:
            return RunBudget(self.spec.cfg, None).stopped(
                msg, exc, list(self.spec.paths), cache, router
            )
        finally:
            if cache is not None:
                cache.close()

    def _pipeline(self, router: Any, actor: Any, plan: WorkerPlan) -> Any:
        from embedgen.pipeline.run import open_cache

        run = self.run
        info = router.info
        if plan.device is not None and "device" in info.details:
            # the driver's copy ran on the CPU; the file says where the workers embedded
            info = dataclasses.replace(info, details={**info.details, "device": plan.device})
        cache = open_cache(run)  # the driver stores the document records of written windows
        try:
            return self._stream(router, actor, info, cache, plan)
        finally:
            if cache is not None:
                cache.close()

    def _stream(self, router: Any, actor: Any, info: Any, cache: Any, plan: WorkerPlan) -> Any:
        """Chunk tasks -> embedding actors -> the driver's sink, with the driver's ``cache``."""
        from embedgen.cache import fingerprint_id
        from embedgen.engines.ray_output import Rows, Sink
        from embedgen.engines.ray_units import chunk_units, plan_units, portable_windows
        from embedgen.engines.ray_worker import EmbedWorker
        from embedgen.pipeline.core import doc_index
        from embedgen.pipeline.windows import Windows, make_chunker, read_options
        from embedgen.util import storage

        ray, run = self.ray, self.run
        tokenizer = router.tokenizer()
        chunker = make_chunker(tokenizer, info, run)
        fp_id = fingerprint_id(info.fingerprint)
        index = doc_index(run, cache, fp_id, chunker)
        stage = Windows(chunker, read_options(run), None)
        remote = any(storage.is_remote(p) for p in self.spec.paths)
        env = storage.environment() if remote else {}
        windows = portable_windows(stage, self.local_cfg, info, fp_id if index else None, env)
        units = plan_units(list(self.spec.paths), run.limit)
        items = [{"unit": i, "spec": json.dumps(asdict(u))} for i, u in enumerate(units)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        ds = ds.map_batches(
            chunk_units,
            batch_size=1,
            batch_format="numpy",
            fn_kwargs={
                "windows": windows,
                "opts": read_options(run),
                "with_ids": info.kind == "onnx",
            },  # fmt: skip
            compute=ray.data.TaskPoolStrategy(size=max(1, min(len(units), plan.workers))),
            num_cpus=0,
            runtime_env={"env_vars": worker_env(self.spec.cfg)},
        )
        ds = ds.map_batches(
            EmbedWorker,
            batch_size=None,
            batch_format="pyarrow",
            fn_constructor_kwargs={"spec": self.spec, "threads": plan.threads,
                                   "device": plan.device,
                                   "limits": self.run_id if actor is not None else None,
                                   "keys": api_keys(self.spec.cfg)},
            compute=ray.data.ActorPoolStrategy(size=plan.workers, max_tasks_in_flight_per_actor=2),
            num_cpus=plan.cpus_per_worker,
            num_gpus=plan.gpus_per_worker or None,
            # A dead worker is restarted and its block retried (what it stored is cached);
            # past that the run stops with WorkerLost.
            max_restarts=WORKER_RESTARTS,
            max_task_retries=WORKER_RESTARTS,
            runtime_env={"env_vars": worker_env(self.spec.cfg)},
        )  # fmt: skip
        rows = Rows(run, info.dim, self.columns)
        max_tokens = chunker.window + tokenizer.overhead
        sink = Sink(self.spec, rows, info, max_tokens, self.mode, self.dataset, len(units))
        sink.index, sink.cache = index, cache
        batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
        try:
            return sink.consume(batches, actor)
        finally:
            # Ray Data stops the workers' actor pool when its executor is collected: drop it
            # now, or a later run in this process may wait for the CPUs those actors hold
            del ds, batches
            gc.collect()
