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
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict
from typing import Any

from embedgen.engines.ray_plan import EngineOptions, WorkerPlan, plan_workers
from embedgen.errors import BudgetExceeded, EmbedgenError, EngineUnavailableError

log = logging.getLogger("embedgen")

INSTALL_HINT = "pip install 'embedgen[ray]'"


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a usage error (exit 2) naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailableError(
            f"--engine ray needs Ray Data, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return ray


def worker_error(exc: BaseException) -> BaseException:
    """The embedgen error behind a failure that Ray wrapped on its way from a worker."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
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
        todo.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    return exc


_PASSED_ENV = ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "HF_HOME", "HF_HUB_OFFLINE")


def worker_env(cfg: Any) -> dict[str, str]:
    """Environment the workers need from the driver: embedgen's directories and the API
    key variables the config names (sent in the job's Ray runtime environment)."""
    names = {k for k in os.environ if k.startswith("EMBEDGEN_")} | set(_PASSED_ENV)
    for pcfg in cfg.providers.values():
        key_env = getattr(pcfg, "api_key_env", None)
        if key_env:
            names.add(key_env)
    return {k: os.environ[k] for k in sorted(names) if k in os.environ}


def _open_budget(cfg: Any, infos: list[Any]) -> Any:
    """The run's budget, opened inside the limits actor (on the driver's node)."""
    from embedgen.pipeline.run_budget import RunBudget

    return RunBudget.open(cfg, infos)


BLOCK_BYTES = 512 * 1024
"""Ray Data block size: a window is cut into blocks of about this many bytes of chunk rows,
so the embedding actors share even a single window (Ray's default is 128 MiB)."""
_CONTEXT: dict[str, Any] = {
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    "target_max_block_size": BLOCK_BYTES,
    # a worker's BudgetExceeded (exit 3), ProviderError... reach the driver as themselves
    "raise_original_map_exception": True,
}


class RayCluster:
    """Connect to ``address`` (or start a local instance) and quiet Ray's own logging;
    a cluster this process started is shut down on exit, one it joined is left running."""

    def __init__(self, ray: Any, address: str | None) -> None:
        self.ray = ray
        self.address = address
        self.started = False

    def __enter__(self) -> RayCluster:
        ray = self.ray
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        for name in ("ray", "ray.data", "ray._private", "ray.util"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=True,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local instance"
                raise EngineUnavailableError(
                    f"cannot start or reach Ray ({where}): {exc}"
                ) from None
            self.started = True
        ctx = ray.data.DataContext.get_current()
        self._saved = {k: getattr(ctx, k) for k in _CONTEXT}
        for k, v in _CONTEXT.items():
            setattr(ctx, k, v)
        return self

    def __exit__(self, *exc: object) -> None:
        ctx = self.ray.data.DataContext.get_current()
        for k, v in self._saved.items():
            setattr(ctx, k, v)
        if self.started:
            self.ray.shutdown()


def run_ray(spec: Any, mode: str, engine: EngineOptions, *, dataset: bool = False) -> Any:
    """Run ``spec`` on Ray, holding the output lock; returns the local engine's RunSummary."""
    from embedgen.pipeline.run import remove_stale_tmp
    from embedgen.util.locks import acquire_output_lock

    ray = import_ray()
    out = spec.output
    with acquire_output_lock(out), RayCluster(ray, engine.address) as cluster:
        remove_stale_tmp(out)
        plan = plan_workers(engine, cluster.ray.cluster_resources())
        log.info(f"ray: {plan.describe()}", extra={"console": False})
        return _RayRun(cluster.ray, spec, plan, mode, dataset=dataset).execute()


class _RayRun:
    def __init__(self, ray: Any, spec: Any, plan: WorkerPlan, mode: str, *, dataset: bool) -> None:
        from embedgen.pipeline.spec import extra_columns

        self.ray = ray
        self.spec = spec
        self.plan = plan
        self.mode = mode
        self.dataset = dataset
        self.run = spec.cfg.run
        self.columns = extra_columns(self.run)
        self.run_id = uuid.uuid4().hex[:12]

    def execute(self) -> Any:
        from embedgen.config import apply_overrides
        from embedgen.pipeline.run import RunSummary
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
            actor = self._start_limits(members)
            try:
                summary: RunSummary = self._pipeline(router, actor)
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
            return summary
        finally:
            if actor is not None:
                try:
                    self.ray.get(actor.budget_close.remote(status))
                finally:
                    self.ray.kill(actor)
            for m in members:
                m.close()

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
        try:
            cache = open_cache(self.run)
            try:
                rest = RunBudget(self.spec.cfg, None)._remaining(
                    list(self.spec.paths), cache, router
                )
            finally:
                if cache is not None:
                    cache.close()
            msg += "; " + rest
        except Exception as err:  # the stop message must not be lost to a counting error
            log.warning(f"could not count what remains to embed: {err}")
        return BudgetExceeded(msg)

    def _pipeline(self, router: Any, actor: Any) -> Any:
        from embedgen.engines.ray_output import DirSink, Rows
        from embedgen.engines.ray_units import chunk_units, plan_units, portable_windows
        from embedgen.engines.ray_worker import EmbedWorker
        from embedgen.pipeline.windows import Windows, make_chunker, read_options

        ray, plan, run = self.ray, self.plan, self.run
        info = router.info
        if plan.device is not None and "device" in info.details:
            # the driver's copy ran on the CPU; the file says where the workers embedded
            info = dataclasses.replace(info, details={**info.details, "device": plan.device})
        tokenizer = router.tokenizer()
        chunker = make_chunker(tokenizer, info, run)
        windows = portable_windows(Windows(chunker, read_options(run), None), self.local_cfg)
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
                                   "limits": self.run_id if actor is not None else None},
            compute=ray.data.ActorPoolStrategy(size=plan.workers, max_tasks_in_flight_per_actor=2),
            num_cpus=plan.cpus_per_worker,
            num_gpus=plan.gpus_per_worker or None,
            # A crashed worker fails the run (re-run: the cache has what it embedded) rather
            # than being restarted from constructor arguments Ray may have dropped.
            max_restarts=0,
            runtime_env={"env_vars": worker_env(self.spec.cfg)},
        )  # fmt: skip
        rows = Rows(run, info.dim, self.columns)
        max_tokens = chunker.window + tokenizer.overhead
        sink = _Sink(self.spec, rows, info, max_tokens, self.mode, self.dataset, len(units))
        if self.dataset:
            sink.dir = DirSink(self.spec.output, rows, info, max_tokens)
        return sink.consume(ds.iter_batches(batch_size=None, batch_format="pyarrow"), router, actor)


class _Sink:
    """The driver's end: reorder, count, record skips, write, summarise."""

    def __init__(
        self,
        spec: Any,
        rows: Any,
        info: Any,
        max_tokens: int,
        mode: str,
        dataset: bool,
        units: int,
    ) -> None:
        from embedgen.engines.reorder import Reorder
        from embedgen.pipeline.progress import Counters

        self.spec = spec
        self.rows = rows
        self.info = info
        self.max_tokens = max_tokens
        self.mode = mode
        self.dataset = dataset
        out = spec.output
        self.spill = out.parent / f".{out.name}.spill-{os.getpid()}"
        self.reorder = Reorder(units, self.spill)
        self.counters = Counters()
        self.writer: Any = None
        self.dir: Any = None
        self.skipped_path = spec.skipped_path if not dataset else out / "skipped.jsonl"
        self._skip_file: Any = None

    def consume(self, batches: Any, router: Any, actor: Any) -> Any:
        from embedgen.pipeline.progress import Progress
        from embedgen.pipeline.read import count_rows

        total = count_rows(list(self.spec.paths))
        if self.spec.cfg.run.limit is not None and total is not None:
            total = min(total, self.spec.cfg.run.limit)
        progress = Progress(total, mode=self.mode)
        try:
            for batch in batches:
                self._count_cached(batch)
                for window in self.reorder.add(batch):
                    self._write(window)
                    progress.update(self.counters)
            self.reorder.check_finished()
            if self.dataset:
                self.dir.finish(asdict(self.counters))
            else:
                if self.writer is None:
                    self._open_empty()
                self.writer.finish()
        except BaseException as exc:
            kept = self.writer.abort() if self.writer is not None else None
            if kept is not None and isinstance(exc, EmbedgenError):
                exc.args = (f"{exc.args[0]} (rows written so far are in {kept})",)
            raise
        finally:
            progress.close()
            if self._skip_file is not None:
                self._skip_file.close()
            shutil.rmtree(self.spill, ignore_errors=True)
        return self._summary(router, actor)

    def _count_cached(self, batch: Any) -> None:
        import pyarrow.compute as pc

        body = pc.greater_equal(batch.column("_pos"), 0)
        cached = pc.and_(body, batch.column("_cached"))
        n_cached = pc.sum(cached).as_py() or 0
        n_body = pc.sum(body).as_py() or 0
        self.counters.cached += n_cached
        self.counters.computed += n_body - n_cached

    def _write(self, window: Any) -> None:
        import pyarrow.compute as pc

        c = self.counters
        c.documents += int(window.column("_docs")[0].as_py())
        c.chunks += window.num_rows - 1
        c.tokens += int(pc.sum(window.column("tokens")).as_py() or 0)
        skips = window.column("_skips")[0].as_py()
        if skips:
            self._record_skips(skips.split("\n"))
        if self.dataset:
            self.dir.write(window)
            return
        if self.writer is None:
            from embedgen.engines.ray_output import open_file_writer

            self.writer = open_file_writer(
                self.spec.output, window, self.rows, self.info, self.max_tokens
            )
        if window.num_rows > 1:
            columns, vectors, keep = self.rows.split(window, self.writer.schema)
            self.writer.write(columns, vectors, keep)

    def _open_empty(self) -> None:
        import pyarrow as pa

        from embedgen.engines.ray_output import open_file_writer

        empty = pa.table({"id": pa.array([], pa.int64())})
        self.writer = open_file_writer(self.spec.output, empty, self.rows, self.info,
                                       self.max_tokens)  # fmt: skip

    def _record_skips(self, lines: list[str]) -> None:
        if self._skip_file is None:
            self.skipped_path.parent.mkdir(parents=True, exist_ok=True)
            self._skip_file = self.skipped_path.open("w", encoding="utf-8")
        for line in lines:
            self._skip_file.write(line + "\n")
        self._skip_file.flush()
        self.counters.skipped += len(lines)

    def _summary(self, router: Any, actor: Any) -> Any:
        from embedgen.pipeline.run import RunSummary, open_cache
        from embedgen.router import ProviderStats

        c = self.counters
        if not c.skipped and self.skipped_path.exists():
            self.skipped_path.unlink()
        stats: dict[str, Any] = {}
        if actor is not None:
            merged = self.ray_get(actor.stats.remote())
            stats = {name: ProviderStats(name=name, **{k: int(v) if k != "seconds" else v
                                                        for k, v in st.items()})
                     for name, st in merged.items()}  # fmt: skip
        cache = open_cache(self.spec.cfg.run) if self.spec.cfg.run.use_cache else None
        if cache is not None:
            from embedgen.cache import fingerprint_id

            try:
                cache.record_run(c.cached, c.computed, fingerprint_id(self.info.fingerprint))
            finally:
                cache.close()
        return RunSummary(
            output=self.spec.output,
            documents=c.documents,
            chunks=c.chunks,
            tokens=c.tokens,
            skipped=c.skipped,
            cached=c.cached,
            computed=c.computed,
            skipped_path=self.skipped_path if c.skipped else None,
            model=self.info.model,
            dim=self.info.dim,
            provider_stats=stats,
            mixed_models="model" in self.rows.extra_columns,
        )

    @staticmethod
    def ray_get(ref: Any) -> Any:
        import ray

        return ray.get(ref)
