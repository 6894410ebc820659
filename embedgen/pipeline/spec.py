"""A run, described as plain data: the resolved config, the input files, the output path.

A :class:`RunSpec` is picklable (a validated config, paths): an engine sends it to
worker processes, and each builds its own stages from it (router, chunker, cache),
never receiving an open handle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgen.config import Config, OnnxConfig, OutputConfig, RunConfig, apply_overrides, load
from embedgen.errors import ConfigError, UsageError
from embedgen.pipeline.read import discover_inputs, has_column
from embedgen.sinks import Target

log = logging.getLogger("embedgen")

_ALIASES = {"threads": "num_threads", "model_path": "model"}


@dataclass(frozen=True)
class RunSpec:
    cfg: Config
    paths: tuple[Path, ...]
    output: Path
    """The Parquet output; for a sink, the local path its lock and skip list go beside."""
    sink: Target | None = None
    """A LanceDB or PostgreSQL table the rows go into (``cfg.output`` says how)."""

    @classmethod
    def resolve(
        cls,
        input: str | Path,
        output: str | Path | None = None,
        *,
        config: Config | str | Path | None = None,
        model: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> RunSpec:
        """The effective config, the input files and the output path of a run."""
        options = options or {}
        cfg = resolve_config(config, model, options)
        return cls.locate(cfg, input, output, table=options.get("table"))

    @classmethod
    def locate(
        cls,
        cfg: Config,
        input: str | Path,
        output: str | Path | None = None,
        *,
        table: str | None = None,
    ) -> RunSpec:
        """The input files and the output path of a run of the resolved ``cfg`` (``table``:
        the ``--table`` option, which only a sink takes; ``cfg`` already holds it)."""
        paths = discover_inputs(input)
        if cfg.run.id_column is None and has_column(paths, "id"):
            cfg.run.id_column = "id"
            log.info("ids from the input's 'id' column (--id-column names another)")
        text = str(output) if output is not None else cfg.output.target
        target = Target.parse(text, cfg.output.table) if text else None
        if target is not None and target.is_sink:
            return cls(cfg, tuple(paths), target.anchor, target)
        if table is not None:
            raise UsageError("--table applies to lancedb: and postgresql:// outputs only")
        out = Path(text) if text else default_output(paths, input)
        return cls(cfg, tuple(paths), out)

    @property
    def skipped_path(self) -> Path:
        return skipped_path_for(self.output)


def resolve_config(
    config: Config | str | Path | None, model: str | None, options: dict[str, Any]
) -> Config:
    """The effective config: the file (or defaults), then the given options on top."""
    cfg = config if isinstance(config, Config) else load(config)
    cfg = cfg.model_copy(deep=True)
    run_opts: dict[str, Any] = {}
    model_opts: dict[str, Any] = {"model": model}
    output_opts: dict[str, Any] = {}
    for key, value in options.items():
        key = _ALIASES.get(key, key)
        if key == "prune":
            output_opts["mode"] = "sync" if value else None
        elif key in RunConfig.model_fields:
            run_opts[key] = value
        elif key in OutputConfig.model_fields and key != "target":
            output_opts[key] = value
        elif key in OnnxConfig.model_fields:
            model_opts[key] = value
        else:
            raise ConfigError(f"unknown run option {key!r}")
    apply_overrides(cfg, "run", run_opts)
    apply_overrides(cfg, "model", model_opts)
    apply_overrides(cfg, "output", output_opts)
    return cfg


def default_output(paths: list[Path], input_spec: str | Path) -> Path:
    spec = Path(str(input_spec))
    if len(paths) == 1 and spec.is_file():
        name = paths[0].name
        for suffix in (".gz", ".parquet", ".pq", ".jsonl", ".ndjson"):
            name = name.removesuffix(suffix)
        return paths[0].with_name(f"{name}.embeddings.parquet")
    base = spec if spec.is_dir() else paths[0].parent
    return base.parent / f"{base.name or 'corpus'}.embeddings.parquet"


def skipped_path_for(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".parquet") + ".skipped.jsonl")


def extra_columns(run: RunConfig) -> tuple[str, ...]:
    """Output columns beyond the vector: sparse weights, ColBERT vectors, the model of mixed
    chains."""
    mixed = run.allow_mixed_models and len(run.providers) > 1
    heads = (("sparse",) if run.sparse else ()) + (("colbert",) if run.colbert else ())
    return heads + (("model",) if mixed else ())
