"""``optimize_model``: the library call behind ``embedgen optimize``."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgen.models.local import ModelSpec
from embedgen.optimize.search import Progress, Search

DEFAULT_MIN_COS = 0.995
DEFAULT_MIN_WORST = 0.98


@dataclass
class OptimizeResult:
    """The search and, when a variant met the floor, the folder written and its sha256."""

    report: dict[str, Any]
    folder: Path | None
    sha256: str | None

    @property
    def met(self) -> bool:
        return self.folder is not None


def source_spec(model: str | None) -> ModelSpec:
    """The model to start from: ``default`` is the packaged default file, not its variant."""
    from embedgen.models.local import DEFAULT_NAMES, original_default_model, resolve_model

    if model in DEFAULT_NAMES:
        return original_default_model()
    return resolve_model(model)


def default_output(spec: ModelSpec) -> Path:
    """``<models dir>/<name>-int8``: ``run --model <name>-int8`` finds it there."""
    from embedgen.models.local import models_dir

    return models_dir() / f"{spec.name}-int8"


def _report(found: Search, out: Path | None, sha256: str | None) -> dict[str, Any]:
    import onnxruntime

    from embedgen.models.variants import cpu_has_vnni

    src = found.source
    base = found.original_chunks_per_s
    chosen = found.chosen
    best = found.best
    return {
        "source": {"name": src.name, "onnx": str(src.onnx_path), "sha256": src.sha256},
        "output": str(out) if out else None,
        "sha256": sha256,
        "dim": found.dim,
        "sample": {"source": found.sample.source, "texts": len(found.sample.texts)},
        "floor": {"mean_cos": found.min_cos, "min_cos": found.min_worst},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "vnni": cpu_has_vnni(),
            "onnxruntime": onnxruntime.__version__,
        },
        "original": {"chunks_per_s": round(base, 1)},
        "candidates": [c.to_dict(base) for c in found.candidates],
        "chosen": chosen.to_dict(base) if chosen else None,
        "best": best.to_dict(base) if best else None,
    }


def optimize_model(
    model: str | None,
    *,
    out: Path | None = None,
    sample_corpus: str | Path | None = None,
    text_column: str = "text",
    limit: int | None = None,
    min_cos: float = DEFAULT_MIN_COS,
    min_worst: float = DEFAULT_MIN_WORST,
    progress: Progress | None = None,
) -> OptimizeResult:
    """Search int8 variants of ``model`` and write the fastest that meets the floor.

    ``min_cos`` is the floor of the mean cosine to the original's vectors on the
    sample, ``min_worst`` that of the smallest. When no variant meets them nothing is
    written and the result's ``report["best"]`` names the closest one reached.
    """
    from embedgen.errors import UsageError
    from embedgen.models.local import sha256_file
    from embedgen.optimize.folder import write_folder
    from embedgen.optimize.sample import load_sample
    from embedgen.optimize.search import search

    if not (0 < min_worst <= 1 and 0 < min_cos <= 1):
        raise UsageError("--min-cos and --min-worst must be between 0 and 1")
    spec = source_spec(model)
    sample = load_sample(sample_corpus, text_column=text_column, limit=limit)
    found = search(spec, sample, min_cos=min_cos, min_worst=min_worst, progress=progress)
    try:
        if found.chosen is None:
            return OptimizeResult(_report(found, None, None), None, None)
        target = out or default_output(spec)
        sha = sha256_file(found.chosen.path)
        report = _report(found, target, sha)
        write_folder(
            target,
            spec=spec,
            onnx_file=found.chosen.path,
            name=target.name,
            report=report,
            graph_optimization=found.chosen.level,
        )
        return OptimizeResult(report, target, sha)
    finally:
        shutil.rmtree(found.workdir, ignore_errors=True)
