"""How many Ray workers, and what each one reserves: pure planning, no Ray import.

The engine options come from the command line over the ``[engine]`` config table
over ``RAY_ADDRESS``; the plan then fits them to the cluster's resources the way Ray
schedules actors: a worker reserves ``cpus_per_worker`` logical CPUs and
``gpus_per_worker`` GPUs, so ``--gpus-per-worker 1`` on a 4-GPU node gives four
workers and ``0.5`` gives eight, two to a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from embedgen.config import EngineConfig, describe
from embedgen.config.load import assign
from embedgen.errors import ConfigError, UsageError

DEFAULT_CPUS_PER_WORKER = 4.0
"""Without ``--workers`` or ``--cpus-per-worker``, a CPU worker takes up to this many cores:
one onnxruntime session per 4 cores keeps model copies few and each session busy."""


class EngineOptions(EngineConfig):
    """The engine as asked for: the validated ``[engine]`` table (``config.EngineConfig``)
    with the command-line overrides assigned through the same validation as every other
    option. A bad value is a ConfigError naming the key (``engine.workers: ...``) or the
    option (``--workers: ...``)."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            err["loc"] = ("engine", *err["loc"])
            raise ConfigError(describe(err)) from None

    @classmethod
    def resolve(
        cls,
        table: Any = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> EngineOptions:
        """Command-line ``overrides`` over the config's ``[engine]`` ``table`` over
        ``RAY_ADDRESS`` (which only fills the address)."""
        names = list(EngineConfig.model_fields)
        given = {n: getattr(table, n, None) for n in names} if table is not None else {}
        opts = cls(**{n: v for n, v in given.items() if v is not None})
        assign(opts, dict(overrides or {}))
        if not opts.address and environ is not None and environ.get("RAY_ADDRESS"):
            opts.address = environ["RAY_ADDRESS"]
        return opts


@dataclass(frozen=True)
class WorkerPlan:
    """The embedding actor pool: ``workers`` actors, each reserving these resources."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    threads: int
    """onnxruntime intra-op threads in each worker."""

    @property
    def device(self) -> str | None:
        """The device each worker's model must use (None: the config decides)."""
        return "cuda" if self.gpus_per_worker > 0 else None

    def describe(self) -> str:
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (
            f"{self.workers} worker(s) x ({self.cpus_per_worker:g} CPU{gpu}, "
            f"{self.threads} thread(s))"
        )


def plan_workers(opts: EngineOptions, resources: Mapping[str, float]) -> WorkerPlan:
    """Fit the asked-for workers to a cluster's total ``resources`` (``ray.cluster_resources()``).

    GPU workers: ``workers`` defaults to as many as the GPUs hold (``GPUs / gpus_per_worker``)
    and each takes one CPU unless told. CPU workers: ``workers`` and ``cpus_per_worker``
    default from each other and the CPU count. Asking for more than the cluster has is a
    usage error rather than a pool that waits forever.
    """
    cpus = float(resources.get("CPU", 0.0))
    gpus = float(resources.get("GPU", 0.0))
    if cpus <= 0:
        raise UsageError("the Ray cluster reports no CPUs")
    g = opts.gpus_per_worker or 0.0
    if g > 0:
        if gpus <= 0:
            raise UsageError(
                f"--gpus-per-worker {g:g}: the Ray cluster has no GPUs "
                "(start its nodes with GPUs visible, or leave the option out)"
            )
        slots = _slots(gpus, g)
        workers = opts.workers or slots
        if workers > slots:
            raise UsageError(
                f"{workers} workers x {g:g} GPU need {workers * g:g} GPUs; "
                f"the Ray cluster has {gpus:g}"
            )
        c = opts.cpus_per_worker or min(1.0, cpus / workers)
    else:
        if opts.workers and opts.cpus_per_worker:
            workers, c = opts.workers, opts.cpus_per_worker
        elif opts.workers:
            workers = opts.workers
            c = max(1.0, math.floor(cpus / workers)) if cpus >= workers else cpus / workers
        elif opts.cpus_per_worker:
            c = opts.cpus_per_worker
            workers = max(1, _slots(cpus, c))
        else:
            c = min(DEFAULT_CPUS_PER_WORKER, cpus)
            workers = max(1, _slots(cpus, c))
    if workers * c > cpus + 1e-9:
        raise UsageError(
            f"{workers} workers x {c:g} CPU need {workers * c:g} CPUs; the Ray cluster has {cpus:g}"
        )
    return WorkerPlan(workers, c, g, max(1, int(c)))


def _slots(total: float, each: float) -> int:
    """How many ``each``-sized reservations fit in ``total`` (rounding noise forgiven)."""
    return int(math.floor(total / each + 1e-9))
