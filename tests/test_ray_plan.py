"""Worker planning for the Ray engine: pure logic, no Ray and no GPU needed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from embedgen.engines.ray_plan import EngineOptions, plan_workers
from embedgen.errors import ConfigError, UsageError


def ray_opts(**kw: object) -> EngineOptions:
    return EngineOptions(kind="ray", **kw)  # type: ignore[arg-type]


def test_one_gpu_per_worker_on_four_gpus_gives_four_workers() -> None:
    plan = plan_workers(ray_opts(gpus_per_worker=1), {"CPU": 32, "GPU": 4})
    assert (plan.workers, plan.gpus_per_worker, plan.cpus_per_worker) == (4, 1.0, 1.0)
    assert plan.device == "cuda"
    assert plan.threads == 1


def test_fractional_gpus_share_a_gpu() -> None:
    plan = plan_workers(ray_opts(gpus_per_worker=0.5), {"CPU": 32, "GPU": 4})
    assert plan.workers == 8
    plan = plan_workers(ray_opts(gpus_per_worker=0.25, cpus_per_worker=2), {"CPU": 8, "GPU": 1})
    assert (plan.workers, plan.cpus_per_worker, plan.threads) == (4, 2.0, 2)


def test_gpu_workers_beyond_the_gpus_are_refused() -> None:
    with pytest.raises(UsageError, match="need 6 GPUs; the Ray cluster has 4"):
        plan_workers(ray_opts(gpus_per_worker=1, workers=6), {"CPU": 32, "GPU": 4})
    with pytest.raises(UsageError, match="no GPUs"):
        plan_workers(ray_opts(gpus_per_worker=1), {"CPU": 32})


def test_cpu_workers_split_the_cores() -> None:
    plan = plan_workers(ray_opts(workers=2), {"CPU": 2})
    assert (plan.workers, plan.cpus_per_worker, plan.threads, plan.device) == (2, 1.0, 1, None)
    plan = plan_workers(ray_opts(workers=3), {"CPU": 16})
    assert (plan.cpus_per_worker, plan.threads) == (5.0, 5)
    # more workers than cores: each gets a share, still one thread
    plan = plan_workers(ray_opts(workers=4), {"CPU": 2})
    assert (plan.cpus_per_worker, plan.threads) == (0.5, 1)


def test_cpu_defaults_from_the_cluster() -> None:
    assert plan_workers(ray_opts(), {"CPU": 2}).workers == 1
    assert plan_workers(ray_opts(), {"CPU": 2}).threads == 2
    plan = plan_workers(ray_opts(), {"CPU": 64})
    assert (plan.workers, plan.cpus_per_worker) == (16, 4.0)
    plan = plan_workers(ray_opts(cpus_per_worker=8), {"CPU": 64})
    assert (plan.workers, plan.threads) == (8, 8)


def test_cpu_overcommit_is_refused() -> None:
    with pytest.raises(UsageError, match="need 8 CPUs; the Ray cluster has 4"):
        plan_workers(ray_opts(workers=4, cpus_per_worker=2), {"CPU": 4})


def test_resolve_order_cli_over_config_over_ray_address() -> None:
    table = SimpleNamespace(
        kind="Ray", address=None, workers=3, cpus_per_worker=None, gpus_per_worker=None
    )
    env = {"RAY_ADDRESS": "10.0.0.5:6379"}
    opts = EngineOptions.resolve(table, {"workers": 2, "kind": None}, env)
    assert (opts.kind, opts.workers, opts.address) == ("ray", 2, "10.0.0.5:6379")
    table.address = "head:6379"
    assert EngineOptions.resolve(table, {}, env).address == "head:6379"
    assert EngineOptions.resolve(table, {"address": "cli:1"}, env).address == "cli:1"
    assert EngineOptions.resolve(None, {}, {}).kind == "local"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "spark"}, "engine.kind"),
        ({"workers": 0}, "engine.workers"),
        ({"cpus_per_worker": 0}, "engine.cpus_per_worker"),
        ({"gpus_per_worker": -1}, "engine.gpus_per_worker"),
        ({"gpus_per_worker": 1.5}, "fraction of one GPU or whole GPUs"),
    ],
)
def test_bad_options_name_the_key(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EngineOptions(**kw)  # type: ignore[arg-type]
