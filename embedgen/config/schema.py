"""The config models: ``[run]``, ``[model]``, ``[providers.NAME]``, ``[budget]``, ``[engine]``...

The file has these tables, all optional:

- ``[run]``: what ``embedgen run`` does (columns, chunking, batching, output, cache).
- ``[model]``: the local ONNX model and how onnxruntime runs it.
- ``[providers.NAME]``: extra providers for a fallback chain (``kind = ...``).
- ``[budget]``: spending caps.
- ``[engine]``: where the run executes (this process, or a Ray cluster).
- ``[slots.NAME]``: several models in one run, one vector column each.
- ``[output]``: where the rows go (a Parquet file, LanceDB, PostgreSQL) and how a run
  keeps a vector store in sync.
- ``[bge_m3_local]``, ``[directml]``, ``[performance]``: the Windows deployment
  layout (``configs/windows_config.toml``), folded into ``[model]`` and ``[run]``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from embedgen.config import windows
from embedgen.config.api import (
    AzureConfig,
    CohereConfig,
    MistralConfig,
    OpenAICompatibleConfig,
    OpenAIConfig,
    VoyageConfig,
)
from embedgen.config.base import (
    Device,
    Dtype,
    GraphOptimization,
    OnError,
    Pooling,
    Strict,
    VectorDtype,
    lower,
)
from embedgen.config.slots import SlotConfig
from embedgen.config.windows import DirectMLTable, PerformanceTable, WindowsModelTable
from embedgen.util.sizes import parse_size


class RunConfig(Strict):
    """``[run]``: the corpus, chunking, batching and output of ``embedgen run``."""

    providers: list[str] = Field(default_factory=list)
    text_column: str = "text"
    id_column: str | None = None
    keep: list[str] = Field(default_factory=list)
    no_text: bool = False
    max_tokens: int | None = Field(default=None, gt=1)
    overlap: int = Field(default=0, ge=0)
    batch_size: int = Field(default=32, gt=0, le=4096)
    batch_tokens: int | None = Field(default=None, gt=0)
    sort_window: int = Field(default=2048, gt=0)
    dtype: Dtype = "float32"
    dimensions: int | None = Field(default=None, gt=0)
    force_dimensions: bool = False
    """``run --force``: truncate with ``dimensions`` a model not trained for it (Matryoshka)."""
    vector_dtype: VectorDtype | None = None
    """The output's vector type; unset: ``dtype``. Not in the cache key: the cache keeps
    ``dtype`` vectors and switching the output type never re-embeds."""
    calibration: str | None = None
    """int8/uint8: an embedgen Parquet file whose ranges (or float vectors) to reuse."""
    on_error: OnError = "fail"
    sparse: bool = False
    colbert: bool = False
    """bge-m3's ColBERT multi-vectors: a slot's ``outputs = [..., "colbert"]`` sets it."""
    allow_mixed_models: bool = False
    allow_missing: bool = False
    """A run with slots: a slot that fails after its fallbacks gets null columns (exit 4)."""
    use_cache: bool = True
    cache_dir: str | None = None
    rerun_unchanged: bool = False
    """Run even when the output already holds this run's rows (see pipeline/up_to_date.py)."""
    limit: int | None = Field(default=None, gt=0)
    log_file: str | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    """A cap on this run's spend (``run --max-cost``), beside ``[budget] run_usd``."""
    batch_wait: bool = True
    """Batch mode: wait for submitted jobs; false (``run --no-wait``): exit 6 once submitted."""


class OnnxConfig(Strict):
    """``[model]`` or ``[providers.NAME]`` with ``kind = "onnx"``: a local ONNX model."""

    kind: Literal["onnx"] = "onnx"
    model: str | None = None
    device: Device = "auto"
    device_id: int = Field(default=0, ge=0)
    adapter_id: int = Field(default=0, ge=0)
    num_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)
    graph_optimization: GraphOptimization = "auto"
    memory_limit: int | None = None
    force_cpu_fallback: bool = False
    warmup_batches: int = Field(default=1, ge=0)
    pooling: Pooling | None = None
    normalize: bool = True
    prefix: str | None = None
    one_text_per_call: bool | None = None
    """Run each text alone, ``num_threads`` calls side by side (unset: on the CPU, for a
    model that quantizes its activations per call, so its vectors do not depend on the
    batch)."""

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)


def _fold_kind(value: Any) -> Any:
    """``kind = "OpenAI"`` is ``openai``: a discriminator cannot fold itself, so the table does."""
    if isinstance(value, dict) and isinstance(value.get("kind"), str):
        return {**value, "kind": value["kind"].lower()}
    return value


ProviderConfig = Annotated[
    OnnxConfig
    | OpenAIConfig
    | AzureConfig
    | OpenAICompatibleConfig
    | MistralConfig
    | VoyageConfig
    | CohereConfig,
    Field(discriminator="kind"),
    BeforeValidator(_fold_kind),
]


class BudgetConfig(Strict):
    """``[budget]``: caps in USD."""

    monthly_usd: float | None = Field(default=None, ge=0)
    run_usd: float | None = Field(default=None, ge=0)
    alert_at: list[float] = Field(default_factory=lambda: [0.5, 0.8, 0.95])


class EngineConfig(Strict):
    """``[engine]``: where the run executes: this process, or a Ray cluster."""

    kind: Annotated[Literal["local", "ray"], BeforeValidator(lower)] = "local"
    address: str | None = None
    """Ray cluster address (``ray://host:10001``, ``auto``); unset: a local Ray instance."""
    workers: int | None = Field(default=None, ge=1)
    """Embedding workers; unset: planned from the cluster's resources."""
    cpus_per_worker: float | None = Field(default=None, gt=0)
    gpus_per_worker: float | None = Field(default=None, ge=0)

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_or_fraction(cls, g: float | None) -> float | None:
        if g is not None and g > 1 and g != int(g):
            raise ValueError("a worker takes a fraction of one GPU or whole GPUs")
        return g


class OutputConfig(Strict):
    """``[output]``: where the rows go, and how a run into a vector store syncs it."""

    target: str | None = None
    """As ``-o``: a Parquet file or ``DIR/``, ``lancedb:PATH`` or ``postgresql://...``."""
    table: str = "chunks"
    """The table of a LanceDB or PostgreSQL target (``--table``)."""
    mode: Annotated[Literal["update", "sync"], BeforeValidator(lower)] = "update"
    """``sync`` (``--prune``) also deletes documents no longer in the input."""
    overwrite: bool = False
    """Replace a table written by another model or with other columns (``--overwrite``)."""
    index: bool = False
    """Build the store's vector index after the load (``--index``)."""


class Config(Strict):
    run: RunConfig = Field(default_factory=RunConfig)
    model: OnnxConfig = Field(default_factory=OnnxConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    slots: dict[str, SlotConfig] = Field(default_factory=dict)
    """Several models in one run (``config/slots.py``); empty: one model, one column."""
    output: OutputConfig = Field(default_factory=OutputConfig)
    bge_m3_local: WindowsModelTable | None = None
    directml: DirectMLTable | None = None
    performance: PerformanceTable | None = None

    source: str | None = Field(default=None, exclude=True)
    """Path of the file this was loaded from."""

    @field_validator("model", mode="before")
    @classmethod
    def _model_kind(cls, v: Any) -> Any:
        return _fold_kind(v)

    def no_effect(self) -> list[str]:
        """Keys that are set but that onnxruntime cannot honour here, with why."""
        return windows.no_effect(self)

    def fold_windows_layout(self) -> None:
        """Apply ``[bge_m3_local]``, ``[directml]`` and ``[performance]`` to model and run."""
        windows.fold(self)
