"""What the vector cache buys: a cold run, a fully cached re-run, and a 5% incremental run.

All three are whole ``embedgen run`` processes (start-up, imports and model loading
included: what a nightly task pays), Parquet in, Parquet out, on the same corpus and
model, with one fresh cache directory (``--in-process`` times ``embed_corpus`` instead):

- ``cold``: empty cache, every chunk computed (and committed);
- ``cached``: the same corpus again, every chunk from the cache;
- ``incremental``: 5% of the documents changed (a sentence appended), only those computed.

With ``--repeat N`` (default 3) the runs are taken in N rounds: a cold run, then three
cached and three incremental runs, each from a copy of its cache (a round counts their
median). Each ratio is the median of the rounds' own ratios. A run on a shared 2-core
machine swings by 10-20% with what else the host runs, over tens of seconds.

Whole processes run on compiled bytecode, as a ``pip install`` leaves it: the package is
byte-compiled first, so an editable checkout under ``PYTHONDONTWRITEBYTECODE`` does not
recompile every module in every timed process.

    python scripts/bench_cache.py --input bench-data/short.parquet --limit 5000 --repeat 3

Targets (issue 14): cached ≥ 50× the cold run's chunks/s; incremental ≤ 8% of its time;
every output equal to a fresh run's rows (checked here: ids, chunks, offsets).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
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


def _timed(
    input: Path, output: Path, cache: Path, model: str | None, in_process: bool = False
) -> dict[str, Any]:
    if in_process:
        import embedgen

        start = time.perf_counter()
        s = embedgen.embed_corpus(input, output, model=model, quiet=True, cache_dir=str(cache))
        seconds = time.perf_counter() - start
        chunks, cached, computed = s.chunks, s.cached, s.computed
    else:
        cmd = [sys.executable, "-m", "embedgen", "run", str(input), "-o", str(output),
               "--cache-dir", str(cache)]  # fmt: skip
        if model:
            cmd += ["--model", model]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"embedgen run failed ({done.returncode}): {done.stderr[-2000:]}")
        found = re.search(r"chunks:\s+([\d,]+) \(([\d,]+) cached, ([\d,]+) computed\)", done.stderr)
        if found is None:
            raise SystemExit(f"no summary in the output of embedgen run: {done.stderr[-2000:]}")
        chunks, cached, computed = (int(g.replace(",", "")) for g in found.groups())
    return {
        "chunks": chunks,
        "computed": computed,
        "cached": cached,
        "seconds": seconds,
        "chunks_per_s": chunks / seconds,
    }


def _same_rows(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    cols = ["id", "chunk", "char_start", "char_end", "tokens"]
    return pq.read_table(a, columns=cols).equals(pq.read_table(b, columns=cols))


def compile_package() -> None:
    """Byte-compile embedgen where it is installed (pip does this; an editable tree may not)."""
    import embedgen

    package = str(Path(embedgen.__file__).resolve().parent)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True, env=env)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    middle = statistics.median_low([r["seconds"] for r in runs])
    best = next(r for r in runs if r["seconds"] == middle)
    return {**best, "all_seconds": [round(r["seconds"], 3) for r in runs]}


def measure(
    input: Path,
    limit: int | None,
    model: str | None,
    in_process: bool = False,
    repeat: int = 1,
) -> dict[str, Any]:
    """``repeat`` rounds of cold, cached and incremental runs; medians, and paired ratios.

    Each round's cached and incremental runs start from a copy of that round's cold cache
    and follow its cold run at once, so a ratio compares runs the host ran at one speed.
    """
    if not in_process:
        compile_package()
    colds: list[dict[str, Any]] = []
    cacheds: list[dict[str, Any]] = []
    incrementals: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="embedgen-bench-cache-") as tmp:
        work = Path(tmp)
        base, changed = _corpus(input, limit, work)

        def from_cold(src: Path, out: Path) -> dict[str, Any]:
            cache = work / "cache-run"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.copytree(work / "cache", cache)
            os.sync()  # else the run's first commit would wait for the whole copy to reach disk
            out.unlink(missing_ok=True)  # else a repeat finds its output up to date and stops
            return _timed(src, out, cache, model, in_process)

        for _ in range(repeat):
            shutil.rmtree(work / "cache", ignore_errors=True)
            colds.append(_timed(base, work / "cold.parquet", work / "cache", model, in_process))
            # the short runs three times a round: one of a few seconds is easily caught out
            cacheds.append(_median([from_cold(base, work / "cached.parquet") for _ in range(3)]))
            incrementals.append(
                _median([from_cold(changed, work / "incr.parquet") for _ in range(3)])
            )
        _timed(changed, work / "fresh.parquet", work / "cache2", model, in_process)  # the reference
        equal = _same_rows(work / "cold.parquet", work / "cached.parquet") and _same_rows(
            work / "incr.parquet", work / "fresh.parquet"
        )
    speedups = [c["seconds"] / k["seconds"] for c, k in zip(colds, cacheds)]  # same chunks
    fractions = [i["seconds"] / c["seconds"] for c, i in zip(colds, incrementals)]
    return {
        "cold": _median(colds),
        "cached": _median(cacheds),
        "incremental": _median(incrementals),
        "cached_speedup": statistics.median(speedups),
        "incremental_time_fraction": statistics.median(fractions),
        "rounds": {"cached_speedup": speedups, "incremental_time_fraction": fractions},
        "rows_equal_fresh_run": equal,
        "whole_process": not in_process,
        "repeat": repeat,
    }


def report(r: dict[str, Any]) -> str:
    lines = [f"{'run':<12} {'chunks':>8} {'computed':>9} {'cached':>8} {'s':>8} {'chunks/s':>10}"]
    for name in ("cold", "cached", "incremental"):
        m = r[name]
        lines.append(
            f"{name:<12} {m['chunks']:>8,} {m['computed']:>9,} {m['cached']:>8,} "
            f"{m['seconds']:>8.2f} {m['chunks_per_s']:>10,.1f}"
            + (f"  (median of {m['all_seconds']})" if len(m.get("all_seconds", [])) > 1 else "")
        )
    rounds = r.get("rounds", {})

    def each(key: str, fmt: str) -> str:
        values = rounds.get(key, [])
        return f" (rounds: {', '.join(fmt.format(x) for x in values)})" if len(values) > 1 else ""

    lines.append(
        f"cached re-run: {r['cached_speedup']:.1f}x the cold run's chunks/s (target ≥ 50x)"
        + each("cached_speedup", "{:.1f}x")
    )
    lines.append(
        f"incremental (5% changed): {r['incremental_time_fraction']:.1%} of the cold "
        "run's time (target ≤ 8%)" + each("incremental_time_fraction", "{:.1%}")
    )
    lines.append(f"rows equal a fresh run's: {r['rows_equal_fresh_run']}"
                 + ("" if r["whole_process"] else " (in process)"))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--in-process", action="store_true", help="time embed_corpus calls")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the three runs")
    args = parser.parse_args(argv)
    result = measure(args.input, args.limit, args.model, args.in_process, args.repeat)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
