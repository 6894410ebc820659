"""What the vector cache buys: a cold run, a fully cached re-run, and a 5% incremental run.

All three are ``embedgen.embed_corpus`` end to end (Parquet in, Parquet out) on the same
corpus and model, with one fresh cache directory:

- ``cold``: empty cache, every chunk computed (and committed);
- ``cached``: the same corpus again, every chunk from the cache;
- ``incremental``: 5% of the documents changed (a sentence appended), only those computed.

    python scripts/bench_cache.py --input bench-data/short.parquet --limit 5000

Targets (issue 3): cached ≥ 20× the cold run's chunks/s; incremental ≤ 10% of its time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _corpus(src: Path, limit: int | None, workdir: Path) -> tuple[Path, Path]:
    """The corpus (first ``limit`` rows) and a copy with 5% of its texts changed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if limit is not None:
        table = table.slice(0, limit)
    base = workdir / "base.parquet"
    pq.write_table(table, base)
    texts = table.column("text").to_pylist()
    rng = random.Random(5)
    for i in rng.sample(range(len(texts)), k=max(1, len(texts) // 20)):
        texts[i] = f"{texts[i]} (revised {i})"
    changed = workdir / "changed.parquet"
    pq.write_table(
        table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), changed
    )
    return base, changed


def _timed(input: Path, output: Path, cache: Path, model: str | None) -> dict[str, Any]:
    import embedgen

    start = time.perf_counter()
    s = embedgen.embed_corpus(input, output, model=model, quiet=True, cache_dir=str(cache))
    seconds = time.perf_counter() - start
    return {
        "chunks": s.chunks,
        "computed": s.computed,
        "cached": s.cached,
        "seconds": seconds,
        "chunks_per_s": s.chunks / seconds,
    }


def measure(input: Path, limit: int | None, model: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="embedgen-bench-cache-") as tmp:
        work = Path(tmp)
        base, changed = _corpus(input, limit, work)
        cache = work / "cache"
        cold = _timed(base, work / "cold.parquet", cache, model)
        cached = _timed(base, work / "cached.parquet", cache, model)
        incremental = _timed(changed, work / "incr.parquet", cache, model)
    return {
        "cold": cold,
        "cached": cached,
        "incremental": incremental,
        "cached_speedup": cached["chunks_per_s"] / cold["chunks_per_s"],
        "incremental_time_fraction": incremental["seconds"] / cold["seconds"],
    }


def report(r: dict[str, Any]) -> str:
    lines = [f"{'run':<12} {'chunks':>8} {'computed':>9} {'cached':>8} {'s':>8} {'chunks/s':>10}"]
    for name in ("cold", "cached", "incremental"):
        m = r[name]
        lines.append(
            f"{name:<12} {m['chunks']:>8,} {m['computed']:>9,} {m['cached']:>8,} "
            f"{m['seconds']:>8.2f} {m['chunks_per_s']:>10,.1f}"
        )
    lines.append(
        f"cached re-run: {r['cached_speedup']:.1f}x the cold run's chunks/s (target ≥ 20x)"
    )
    lines.append(
        f"incremental (5% changed): {r['incremental_time_fraction']:.1%} of the cold "
        "run's time (target ≤ 10%)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.input, args.limit, args.model)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
