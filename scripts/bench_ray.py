"""Ray engine vs local engine: whole-process throughput on the same corpus, one run each.

Each engine runs as its own ``embedgen run INPUT --no-cache`` process (so Ray's start-up,
worker start and shut-down are counted, as a user would wait for them), alternating
local, ray, local, ray... for ``--repeat`` rounds; the best of each is reported with the
ratio ray/local. Run benchmarks inside ``flock /tmp/embedgen-bench.lock``.

    python scripts/bench_ray.py --input bench-data/short_20k.parquet --workers 2
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHUNKS = re.compile(r"chunks:\s+([\d,]+)")
TARGET = 0.8
"""Ray over local throughput that #19 asks for on 2 cores (the earlier issue asked 0.7)."""


def run_once(input: Path, out: Path, extra: list[str]) -> tuple[float, int]:
    """(seconds, chunks) of one whole ``embedgen run`` process."""
    cmd = [sys.executable, "-m", "embedgen", "run", str(input), "--no-cache", "-o", str(out)]
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"embedgen run failed ({res.returncode}):\n{res.stderr}")
    m = _CHUNKS.search(res.stderr)
    return seconds, int(m.group(1).replace(",", "")) if m else 0


def measure(input: Path, workers: int, repeat: int = 1) -> dict[str, float]:
    best = {"local": float("inf"), "ray": float("inf")}
    chunks = 0
    with tempfile.TemporaryDirectory(prefix="embedgen-bench-ray-") as tmp:
        for _ in range(repeat):
            for name, extra in (
                ("local", []),
                ("ray", ["--engine", "ray", "--workers", str(workers)]),
            ):
                seconds, chunks = run_once(input, Path(tmp) / f"{name}.parquet", extra)
                best[name] = min(best[name], seconds)
    return {
        "chunks": chunks,
        "local_s": best["local"],
        "ray_s": best["ray"],
        "local_chunks_per_s": chunks / best["local"],
        "ray_chunks_per_s": chunks / best["ray"],
        "ratio": best["local"] / best["ray"],
    }


def report(r: dict[str, float], workers: int) -> str:
    verdict = "meets" if r["ratio"] >= TARGET else "misses"
    return "\n".join(
        [
            f"local engine: {r['local_s']:.1f}s "
            f"({r['local_chunks_per_s']:,.0f} chunks/s, whole process)",
            f"ray engine ({workers} workers): {r['ray_s']:.1f}s "
            f"({r['ray_chunks_per_s']:,.0f} chunks/s)",
            f"ray / local throughput: {r['ratio']:.2f}x ({verdict} >= {TARGET})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    print(report(measure(args.input, args.workers, args.repeat), args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
