"""The Windows deployment layout: ``[bge_m3_local]``, ``[directml]``, ``[performance]``.

``configs/windows_config.toml`` is accepted unchanged; :func:`fold` applies its tables
to ``[model]`` and ``[run]``, and :func:`no_effect` lists the keys onnxruntime cannot
honour, so ``doctor`` and ``config show`` report them instead of ignoring them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from embedgen.config.base import Device, Strict
from embedgen.util.sizes import parse_size

if TYPE_CHECKING:
    from embedgen.config.schema import Config


class WindowsModelTable(Strict):
    """``[bge_m3_local]`` of the Windows deployment layout."""

    model_path: str | None = None
    device: Device = "auto"
    adapter_id: int = Field(default=0, ge=0)
    batch_size: int | None = Field(default=None, gt=0, le=4096)
    max_sequence_length: int | None = Field(default=None, gt=1)
    num_threads: int = Field(default=0, ge=0)
    memory_pool_size: int | None = None

    @field_validator("memory_pool_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)


class DirectMLTable(Strict):
    """``[directml]`` of the Windows deployment layout."""

    debug_layer: bool = False
    force_cpu_fallback: bool = False
    memory_budget_mb: int | None = Field(default=None, ge=0)


class PerformanceTable(Strict):
    """``[performance]`` of the Windows deployment layout."""

    warmup_batches: int = Field(default=1, ge=0)
    preload_model: bool = True
    enable_model_caching: bool = True


def no_effect(cfg: Config) -> list[str]:
    """Keys that are set but that onnxruntime cannot honour here, with why."""
    out: list[str] = []
    if cfg.directml and cfg.directml.debug_layer:
        out.append(
            "directml.debug_layer: onnxruntime's DirectML provider has no option for "
            "the D3D12 debug layer; enable it with the Windows Graphics Tools instead"
        )
    if cfg.directml and cfg.directml.memory_budget_mb is not None:
        out.append(
            "directml.memory_budget_mb: onnxruntime's DirectML provider has no memory "
            "budget option; DirectML manages GPU memory itself"
        )
    if (
        cfg.bge_m3_local
        and cfg.bge_m3_local.memory_pool_size is not None
        and cfg.model.device in ("directml", "cpu")
    ):
        out.append(
            "bge_m3_local.memory_pool_size: only the CUDA provider takes a memory "
            f"limit (gpu_mem_limit); it has no effect on device {cfg.model.device!r}"
        )
    if cfg.performance and not cfg.performance.preload_model:
        out.append(
            "performance.preload_model = false has no effect: embedgen loads the model "
            "as soon as a run has something to embed (never in a fully cached run)"
        )
    return out


def fold(cfg: Config) -> None:
    """Apply ``[bge_m3_local]``, ``[directml]`` and ``[performance]`` to model and run."""
    w = cfg.bge_m3_local
    if w is not None:
        if w.model_path is not None:
            cfg.model.model = w.model_path
        cfg.model.device = w.device
        cfg.model.adapter_id = w.adapter_id
        cfg.model.device_id = w.adapter_id
        cfg.model.num_threads = w.num_threads
        if w.memory_pool_size is not None:
            cfg.model.memory_limit = w.memory_pool_size
        if w.batch_size is not None:
            cfg.run.batch_size = w.batch_size
        if w.max_sequence_length is not None:
            cfg.run.max_tokens = w.max_sequence_length
    if cfg.directml is not None:
        cfg.model.force_cpu_fallback = cfg.directml.force_cpu_fallback
    if cfg.performance is not None:
        cfg.model.warmup_batches = cfg.performance.warmup_batches
        if cfg.performance.enable_model_caching is False:
            cfg.run.use_cache = False
