"""Configuration: TOML files validated on load, with command-line overrides.

The file has these tables, all optional:

- ``[run]``: what ``embedgen run`` does (columns, chunking, batching, output, cache).
- ``[model]``: the local ONNX model and how onnxruntime runs it.
- ``[providers.NAME]``: extra providers for a fallback chain (``kind = ...``).
- ``[budget]``: spending caps.
- ``[bge_m3_local]``, ``[directml]``, ``[performance]``: the Windows deployment
  layout (``configs/windows_config.toml``), folded into ``[model]`` and ``[run]``.

Unknown keys and wrong types are :class:`ConfigError` naming the key path.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from embedgen.config_base import Strict
from embedgen.errors import ConfigError
from embedgen.providers.api_config import (
    AzureConfig,
    CohereConfig,
    MistralConfig,
    OpenAICompatibleConfig,
    OpenAIConfig,
    VoyageConfig,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: int | str) -> int:
    """Bytes from ``2GB``, ``512MiB``, ``1.5G`` or a plain integer (binary units)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 2GB or 512MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a size >= 0")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size such as 2GB or 512MB, got {value!r}")
    unit = m.group(2).upper().replace("I", "").replace("B", "")
    return int(float(m.group(1)) * _UNITS[unit])


_Strict = Strict


Device = Literal["auto", "cpu", "cuda", "directml"]
Pooling = Literal["mean", "cls", "model"]


class RunConfig(_Strict):
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
    dtype: Literal["float32", "float16"] = "float32"
    dimensions: int | None = Field(default=None, gt=0)
    on_error: Literal["fail", "skip"] = "fail"
    sparse: bool = False
    allow_mixed_models: bool = False
    use_cache: bool = True
    cache_dir: str | None = None
    limit: int | None = Field(default=None, gt=0)
    log_file: str | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    """A cap on this run's spend (``run --max-cost``), beside ``[budget] run_usd``."""


class OnnxConfig(_Strict):
    """``[model]`` or ``[providers.NAME]`` with ``kind = "onnx"``: a local ONNX model."""

    kind: Literal["onnx"] = "onnx"
    model: str | None = None
    device: Device = "auto"
    device_id: int = Field(default=0, ge=0)
    adapter_id: int = Field(default=0, ge=0)
    num_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)
    graph_optimization: Literal["auto", "disable", "basic", "extended", "all"] = "auto"
    memory_limit: int | None = None
    force_cpu_fallback: bool = False
    warmup_batches: int = Field(default=1, ge=0)
    pooling: Pooling | None = None
    normalize: bool = True
    prefix: str | None = None

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)


ProviderConfig = Annotated[
    OnnxConfig
    | OpenAIConfig
    | AzureConfig
    | OpenAICompatibleConfig
    | MistralConfig
    | VoyageConfig
    | CohereConfig,
    Field(discriminator="kind"),
]


class BudgetConfig(_Strict):
    """``[budget]``: caps in USD."""

    monthly_usd: float | None = Field(default=None, ge=0)
    run_usd: float | None = Field(default=None, ge=0)
    alert_at: list[float] = Field(default_factory=lambda: [0.5, 0.8, 0.95])


class WindowsModelTable(_Strict):
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


class DirectMLTable(_Strict):
    """``[directml]`` of the Windows deployment layout."""

    debug_layer: bool = False
    force_cpu_fallback: bool = False
    memory_budget_mb: int | None = Field(default=None, ge=0)


class PerformanceTable(_Strict):
    """``[performance]`` of the Windows deployment layout."""

    warmup_batches: int = Field(default=1, ge=0)
    preload_model: bool = True
    enable_model_caching: bool = True


class Config(_Strict):
    run: RunConfig = Field(default_factory=RunConfig)
    model: OnnxConfig = Field(default_factory=OnnxConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    bge_m3_local: WindowsModelTable | None = None
    directml: DirectMLTable | None = None
    performance: PerformanceTable | None = None

    source: str | None = Field(default=None, exclude=True)
    """Path of the file this was loaded from."""

    def no_effect(self) -> list[str]:
        """Keys that are set but that onnxruntime cannot honour here, with why."""
        out: list[str] = []
        if self.directml and self.directml.debug_layer:
            out.append(
                "directml.debug_layer: onnxruntime's DirectML provider has no option for "
                "the D3D12 debug layer; enable it with the Windows Graphics Tools instead"
            )
        if self.directml and self.directml.memory_budget_mb is not None:
            out.append(
                "directml.memory_budget_mb: onnxruntime's DirectML provider has no memory "
                "budget option; DirectML manages GPU memory itself"
            )
        if (
            self.bge_m3_local
            and self.bge_m3_local.memory_pool_size is not None
            and self.model.device in ("directml", "cpu")
        ):
            out.append(
                "bge_m3_local.memory_pool_size: only the CUDA provider takes a memory "
                f"limit (gpu_mem_limit); it has no effect on device {self.model.device!r}"
            )
        if self.performance and not self.performance.preload_model:
            out.append(
                "performance.preload_model = false: embedgen always loads the model "
                "before reading the corpus, so a broken model fails fast"
            )
        return out

    def fold_windows_layout(self) -> None:
        """Apply ``[bge_m3_local]``, ``[directml]`` and ``[performance]`` to model and run."""
        w = self.bge_m3_local
        if w is not None:
            if w.model_path is not None:
                self.model.model = w.model_path
            self.model.device = w.device
            self.model.adapter_id = w.adapter_id
            self.model.device_id = w.adapter_id
            self.model.num_threads = w.num_threads
            if w.memory_pool_size is not None:
                self.model.memory_limit = w.memory_pool_size
            if w.batch_size is not None:
                self.run.batch_size = w.batch_size
            if w.max_sequence_length is not None:
                self.run.max_tokens = w.max_sequence_length
        if self.directml is not None:
            self.model.force_cpu_fallback = self.directml.force_cpu_fallback
        if self.performance is not None:
            self.model.warmup_batches = self.performance.warmup_batches
            if self.performance.enable_model_caching is False:
                self.run.use_cache = False


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a table",
    "model": "a table",
}


_KINDS = {"onnx", "openai", "azure", "openai_compatible", "mistral", "voyage", "cohere"}


def _describe(err: Any) -> str:
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    # a discriminated union puts the tag in the path: providers.x.openai.rpm -> providers.x.rpm
    if len(parts) > 2 and parts[0] == "providers" and parts[2] in _KINDS:
        del parts[2]
    loc = ".".join(parts)
    typ: str = err["type"]
    got = err.get("input")
    if typ == "extra_forbidden":
        return f"{loc}: unknown key"
    if typ == "missing":
        return f"{loc}: required key is missing"
    if typ == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{loc}: expected one of {expected}, got {got!r}"
    if typ == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        return f"{loc}.kind: expected one of {expected}, got {err.get('ctx', {}).get('tag')!r}"
    if typ == "union_tag_not_found":
        return f"{loc}: missing key 'kind'"
    for prefix, words in _TYPE_WORDS.items():
        if typ.startswith(prefix + "_") or typ == prefix + "_type":
            return f"{loc}: expected {words}, got {got!r}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{loc}: {msg}" if isinstance(got, dict) else f"{loc}: {msg}, got {got!r}"


def validate(data: dict[str, Any], source: str | None = None) -> Config:
    """A :class:`Config` from parsed TOML, or ConfigError naming the first bad key."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        where = f"{source}: " if source else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{where}{_describe(errors[0])}{more}") from None
    cfg.source = source
    cfg.fold_windows_layout()
    for name in cfg.run.providers:
        if name not in cfg.providers and name != "local":
            raise ConfigError(
                f"{source + ': ' if source else ''}run.providers: {name!r} has no "
                f"[providers.{name}] table (have: {', '.join(cfg.providers) or 'none'})"
            )
    return cfg


def load(path: str | Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return validate({})
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return validate(data, str(p))


def apply_overrides(cfg: Config, section: str, values: dict[str, Any]) -> None:
    """Set command-line values (None means 'not given') with the same validation."""
    target = getattr(cfg, section)
    for key, value in values.items():
        if value is None:
            continue
        try:
            setattr(target, key, value)
        except ValidationError as exc:
            err = exc.errors()[0]
            err["loc"] = ("--" + key.replace("_", "-"),)
            raise ConfigError(_describe(err)) from None
