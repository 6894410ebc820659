"""Memory of a whole ``embedgen run`` process, sampled from ``/proc/PID/status``.

Peak RSS alone misleads: it counts the pages of the LMDB cache the run has read through
its memory map and the mapped libraries and model (``RssFile``), which the system can
reclaim whenever it needs them, beside the run's own memory (``RssAnon``), which it
cannot. This section reports both, every 20 ms, for:

- ``cold`` / ``cached``: the input with an empty cache, then the same run again (every
  chunk from the cache; its output removed first, so it reads and writes every row rather
  than finding the output up to date);
- ``x5 cold`` / ``x5 cached``: the input five times over with new ids (5x the rows, the
  same texts), on a cache of its own;
- ``doc``: one document of ``--doc-chars`` characters built from the input's texts.

    python scripts/bench_memory.py --input bench-data/short_200k.parquet --x5 --doc-chars 5000000
    python scripts/bench.py --input ... --skip embedgen --skip reference --skip st --memory

Targets (#23): peak RssAnon at most 400 MB for 200,000 short texts cold and cached and
for one 5-million-character document; 5x the rows at most 10% above 1x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("RssAnon", "RssFile", "VmRSS", "VmHWM")
ANON_TARGET_MB = 400.0
GROWTH_TARGET = 1.10


@dataclass
class Sample:
    """One run: its rows, seconds, exit code and the peak of each field (MB)."""

    name: str
    rows: int
    seconds: float
    code: int
    peak: dict[str, float]


def status(pid: int) -> dict[str, float]:
    """The memory fields of ``/proc/PID/status``, in MB (empty once the process is gone)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in FIELDS:
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def run_sampled(name: str, rows: int, args: list[str], env: dict[str, str]) -> Sample:
    """Run ``embedgen run ARGS`` in a subprocess and keep the peak of every field."""
    cmd = [sys.executable, "-m", "embedgen", "run", *args, "-q"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    peak = dict.fromkeys(FIELDS, 0.0)

    def watch() -> None:
        while proc.poll() is None:
            for key, value in status(proc.pid).items():
                peak[key] = max(peak[key], value)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode not in (0, 4):
        print(f"{name}: exit {proc.returncode}: {err.strip()[-500:]}", file=sys.stderr)
    return Sample(name, rows, time.perf_counter() - started, proc.returncode, peak)


def times_five(src: Path, out: Path) -> int:
    """``src`` five times over, each copy's ids made new (``<copy>-<id>``); its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src, columns=["id", "text"])
    with pq.ParquetWriter(out, pa.schema([("id", pa.string()), ("text", pa.string())])) as w:
        for copy in range(5):
            ids = [f"{copy}-{i}" for i in table.column("id").to_pylist()]
            w.write_table(pa.table({"id": ids, "text": table.column("text")}))
    return 5 * table.num_rows


def one_document(src: Path, out: Path, chars: int) -> None:
    """One row whose text is the input's texts joined until ``chars`` characters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts: list[str] = []
    size = 0
    while size < chars:
        for text in pq.read_table(src, columns=["text"]).column("text").to_pylist():
            if text:
                parts.append(text)
                size += len(text) + 1
                if size >= chars:
                    break
    pq.write_table(pa.table({"id": ["doc"], "text": [" ".join(parts)[:chars]]}), out)


def measure(src: Path, *, x5: bool, doc_chars: int | None, workdir: Path) -> list[Sample]:
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(src).metadata.num_rows
    samples: list[Sample] = []

    def twice(label: str, path: Path, n: int) -> None:
        env = dict(os.environ, EMBEDGEN_CACHE_DIR=str(workdir / f"cache-{label or 'x1'}"))
        out = workdir / f"out-{label or 'x1'}.parquet"
        for run in ("cold", "cached"):
            name = f"{label} {run}".strip()
            out.unlink(missing_ok=True)  # else the cached run finds its output up to date
            samples.append(run_sampled(name, n, [str(path), "-o", str(out)], env))
            print(f"measured memory: {name}", file=sys.stderr)

    twice("", src, rows)
    if x5:
        big = workdir / "x5.parquet"
        twice("x5", big, times_five(src, big))
    if doc_chars:
        doc = workdir / "doc.parquet"
        one_document(src, doc, doc_chars)
        env = dict(os.environ, EMBEDGEN_CACHE_DIR=str(workdir / "cache-doc"))
        name = f"doc {doc_chars:,} chars"
        samples.append(
            run_sampled(name, 1, [str(doc), "-o", str(workdir / "doc-out.parquet")], env)
        )
        print(f"measured memory: {name}", file=sys.stderr)
    return samples


def report(samples: list[Sample]) -> str:
    head = (
        f"{'run':<24} {'rows':>10} {'s':>7}  {'RssAnon':>8} {'RssFile':>8} {'RSS':>8} {'VmHWM':>8}"
    )
    lines = [head, "-" * len(head)]
    for s in samples:
        p = s.peak
        lines.append(
            f"{s.name:<24} {s.rows:>10,} {s.seconds:>7.1f}  {p['RssAnon']:>7.0f}M "
            f"{p['RssFile']:>7.0f}M {p['VmRSS']:>7.0f}M {p['VmHWM']:>7.0f}M"
            + ("" if s.code in (0, 4) else f"  exit {s.code}")
        )
    lines.append("(peaks in MB; RssFile: mapped cache pages, libraries and model, reclaimable)")
    by = {s.name: s.peak["RssAnon"] for s in samples}
    for name, anon in by.items():
        if name in ("cold", "cached") or name.startswith("doc"):
            ok = "meets" if anon <= ANON_TARGET_MB else "misses"
            lines.append(f"{name}: peak RssAnon {anon:.0f} MB ({ok} <= {ANON_TARGET_MB:.0f} MB)")
    for run in ("cold", "cached"):
        if f"x5 {run}" in by and by.get(run):
            ratio = by[f"x5 {run}"] / by[run]
            ok = "meets" if ratio <= GROWTH_TARGET else "misses"
            lines.append(f"x5/x1 {run}: RssAnon {ratio:.2f}x ({ok} <= {GROWTH_TARGET:.2f}x)")
    return "\n".join(lines)


def section(args: argparse.Namespace) -> None:
    """The memory section of ``bench.py --memory``."""
    with tempfile.TemporaryDirectory(prefix="embedgen-mem-") as tmp:
        print(report(measure(args.input, x5=args.x5, doc_chars=args.doc_chars, workdir=Path(tmp))))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--x5", action="store_true", help="memory: also the input 5x over")
    parser.add_argument(
        "--doc-chars", type=int, default=5_000_000, help="memory: one document this long (0: no)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="Parquet with id, text")
    add_arguments(parser)
    section(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
