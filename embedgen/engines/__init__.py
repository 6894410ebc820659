"""Engines: where a run executes. ``local`` is this process; ``ray`` is Ray Data.

Both run the same stages (:mod:`embedgen.pipeline`) from the same picklable
:class:`~embedgen.pipeline.spec.RunSpec` and give the same rows. The engine comes from
``--engine`` / the ``[engine]`` config table; nothing imports Ray unless it is chosen.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.engines.ray_plan import EngineOptions

if TYPE_CHECKING:
    from embedgen.config import Config
    from embedgen.pipeline.run import RunSummary

ENGINE_OPTIONS = ("engine", "ray_address", "workers", "cpus_per_worker", "gpus_per_worker")
"""Keyword arguments of :func:`embed_corpus` that choose the engine (the rest configure the run)."""


def embed_corpus(
    input: str | Path,
    output: str | Path | None = None,
    *,
    config: Config | str | Path | None = None,
    model: str | None = None,
    quiet: bool = False,
    progress: str | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    **options: Any,
) -> RunSummary:
    """Embed every document of ``input`` into the Parquet file ``output``.

    ``options`` are ``[run]`` or ``[model]`` config keys (``batch_size``, ``max_tokens``,
    ``device``, ``threads``...), overriding ``config``; an unknown key is a ConfigError.
    The engine is ``engine`` / the ``[engine]`` table (``local`` by default); ``output``
    ending in ``/`` (or an existing directory) asks the Ray engine for a Parquet dataset of
    shards instead of one file. Skipped documents are counted in the summary and listed
    beside the output. The summary's ``seconds`` are wall time from this call, model
    preparation and Ray start-up included.
    """
    from embedgen.pipeline.progress import Progress
    from embedgen.pipeline.spec import RunSpec, resolve_config
    from embedgen.providers.onnx_session import early_session

    started = time.perf_counter()
    cfg = resolve_config(config, model, options)
    opts = EngineOptions.resolve(
        cfg.engine,
        {
            "kind": engine,
            "address": ray_address,
            "workers": workers,
            "cpus_per_worker": cpus_per_worker,
            "gpus_per_worker": gpus_per_worker,
        },
        os.environ,
    )
    # a local run of one model loads it while the input is looked at and the modules import
    local = opts.kind == "local" and not cfg.slots and not is_dir_output(output)
    with early_session(cfg if local else None):
        spec = RunSpec.locate(cfg, input, output, table=options.get("table"))
        mode = Progress.choose_mode(quiet) if progress is None else progress
        summary = run_spec(spec, mode, opts, dataset=is_dir_output(output) and spec.sink is None)
    summary.timed(started)
    if summary.documents == 0 and summary.skipped == 0:  # an empty file, or a wrong glob
        logging.getLogger("embedgen").warning(
            f"the input has no documents ({', '.join(map(str, spec.paths))}): the output has 0 rows"
        )
    return summary


def is_dir_output(output: str | Path | None) -> bool:
    """``-o DIR/`` (a trailing slash, or an existing directory) asks for a dataset of shards."""
    if output is None:
        return False
    text = str(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def run_spec(spec: Any, mode: str, opts: EngineOptions, *, dataset: bool = False) -> RunSummary:
    """Run a resolved ``spec`` on the engine ``opts`` names (``dataset``: ``-o DIR/``); an
    ``s3://`` output is staged locally and uploaded when finished (:mod:`.staged`)."""
    from embedgen.util import storage

    if storage.is_remote(spec.output):
        from embedgen.engines.staged import run_to_store

        return run_to_store(spec, dataset, lambda local: _run(local, mode, opts, dataset))
    return _run(spec, mode, opts, dataset)


def _run(spec: Any, mode: str, opts: EngineOptions, dataset: bool) -> RunSummary:
    if spec.cfg.slots:
        return _run_slots(spec, mode, opts, dataset=dataset)
    if opts.kind == "ray":
        from embedgen.engines.ray_engine import run_ray

        if spec.sink is not None:
            from embedgen.errors import UsageError

            raise UsageError(
                f"--engine ray cannot write into {spec.sink} yet; run it with --engine local"
            )
        return run_ray(spec, mode, opts, dataset=dataset)
    from embedgen.errors import UsageError
    from embedgen.pipeline.run import run_local

    if dataset:
        raise UsageError("-o DIR/ (a dataset of shards) needs --engine ray; give a .parquet file")
    return run_local(spec, mode)


def _run_slots(spec: Any, mode: str, opts: EngineOptions, *, dataset: bool) -> RunSummary:
    """A run with several model slots: the local engine, one file, no batch mode (yet)."""
    from embedgen.errors import UsageError
    from embedgen.pipeline.multi_run import run_multi

    cfg = spec.cfg
    if opts.kind != "local" or dataset:
        raise UsageError(
            "several models in one run (--model NAME=SPEC, [slots]) run on the local engine "
            "into one .parquet file; drop --engine ray / -o DIR/"
        )
    if spec.sink is not None:
        raise UsageError(
            f"several models in one run write a .parquet file, not {spec.sink} (the sinks "
            "hold one vector column): run once per model into its own table"
        )
    batch = [n for s in cfg.slots.values() for n in s.providers
             if getattr(cfg.providers[n], "mode", "sync") == "batch"]  # fmt: skip
    if batch:
        raise UsageError(f"providers {batch}: batch mode is not available in a run with "
                         "several models; use mode = \"sync\" there")  # fmt: skip
    return run_multi(spec, mode)


__all__ = ["ENGINE_OPTIONS", "EngineOptions", "embed_corpus", "run_spec"]
