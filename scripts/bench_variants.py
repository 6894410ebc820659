"""Int8 variants against the plain fp32 onnxruntime loop: speed and fidelity, one process.

Rows (each timed whole: model load, tokenization, embedding; best of ``--repeat``,
the rows taken in turn each round so a busy machine slows them alike):

- ``fp32 loop``: bench.py's reference loop (tokenizers, length-sorted batches of 32,
  onnxruntime with default session options, mean pooling) on the fp32 export;
- ``embedgen default``: ``embed_corpus`` with the embedded default (its int8 variant);
- ``embedgen default-original``: the packaged default file as shipped;
- ``embedgen optimized``: ``embed_corpus`` with an ``embedgen optimize`` folder.

Fidelity is the cosine of each chunk's vector to sentence-transformers' (the fp32 loop's
vectors stand in for them: ``scripts/export_fp32.py`` checks they agree to 1e-7).

    python scripts/bench_variants.py --input bench-data/short.parquet --limit 5000 \\
        --fp32 /work/assets/minilm-fp32 --optimized /tmp/minilm-int8 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402


@dataclass
class Row:
    name: str
    chunks: int = 0
    seconds: float = float("inf")
    mean_cos: float | None = None
    min_cos: float | None = None

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds not in (0, float("inf")) else 0.0


def _embedgen(input: Path, out: Path, model: str | None) -> Callable[[], tuple[int, np.ndarray]]:
    def run() -> tuple[int, np.ndarray]:
        import pyarrow.parquet as pq

        import embedgen

        summary = embedgen.embed_corpus(input, out, model=model, quiet=True, use_cache=False)
        table = pq.read_table(out, columns=["embedding"])
        return summary.chunks, np.array(table[0].to_pylist(), np.float32)

    return run


def measure(
    input: Path, fp32: Path, optimized: Path | None, repeat: int, workdir: Path
) -> list[Row]:
    """Every row, best of ``repeat`` rounds; fidelity against the fp32 loop's vectors."""
    from embedgen.models.local import resolve_model

    resolve_model(None)  # build the default's variant before any timing
    texts_from = workdir / "default.parquet"
    _embedgen(input, texts_from, None)()  # warm-up; its chunk texts feed the fp32 loop
    setup = bench.Setup(input=input, model=str(fp32), st_model=None, workdir=workdir,
                        embedgen_options={}, texts_path=texts_from)  # fmt: skip

    def fp32_loop() -> tuple[int, np.ndarray]:
        result, vectors = bench.measure_reference(setup, 1, False)
        return result.chunks, vectors

    runs: dict[str, Callable[[], tuple[int, Any]]] = {
        "fp32 loop": fp32_loop,
        "embedgen default": _embedgen(input, workdir / "a.parquet", None),
        "embedgen default-original": _embedgen(input, workdir / "b.parquet", "default-original"),
    }
    if optimized is not None:
        runs["embedgen optimized"] = _embedgen(input, workdir / "c.parquet", str(optimized))
    rows = {name: Row(name) for name in runs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            chunks, vecs = run()
            elapsed = time.perf_counter() - started
            rows[name].chunks = chunks
            rows[name].seconds = min(rows[name].seconds, elapsed)
            vectors[name] = vecs
    ref = vectors["fp32 loop"]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    for name, vecs in vectors.items():
        cos = (ref * vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).sum(axis=1)
        rows[name].mean_cos, rows[name].min_cos = float(cos.mean()), float(cos.min())
    return list(rows.values())


def report(rows: list[Row]) -> str:
    base = rows[0].chunks_per_s
    lines = [f"{'':28}{'chunks':>8}{'seconds':>9}{'chunks/s':>10}{'x fp32':>8}"
             f"{'mean cos':>10}{'min cos':>9}"]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r.name:28}{r.chunks:>8,}{r.seconds:>9.2f}{r.chunks_per_s:>10.1f}"
            f"{r.chunks_per_s / base:>8.2f}{r.mean_cos or 0:>10.5f}{r.min_cos or 0:>9.5f}"
        )
    lines.append("cosines are to sentence-transformers (= the fp32 loop's vectors to 1e-7)")
    return "\n".join(lines)


def section(args: argparse.Namespace) -> None:
    """bench.py's ``--fp32`` section: the same rows on bench.py's input and repeats."""
    print("\n== int8 variants vs the plain fp32 onnxruntime loop (bench_variants.py)")
    with tempfile.TemporaryDirectory(prefix="embedgen-bench-variants-") as tmp:
        data = bench._limited_input(args.input, args.limit, Path(tmp))
        print(report(measure(data, args.fp32, args.optimized, args.repeat, Path(tmp))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="Parquet with a text column")
    parser.add_argument("--limit", type=int, help="use the first N rows of the input")
    parser.add_argument("--fp32", type=Path, required=True, help="fp32 export folder")
    parser.add_argument("--optimized", type=Path, help="an `embedgen optimize` folder")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; best of each row")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="embedgen-bench-variants-") as tmp:
        workdir = Path(tmp)
        data = bench._limited_input(args.input, args.limit, workdir)
        print(report(measure(data, args.fp32, args.optimized, args.repeat, workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
