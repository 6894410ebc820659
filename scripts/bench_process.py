"""Whole-process figures of issue #22: embedgen against a plain fp32 loop, and start-up.

Every figure is a whole process, started afresh, as a person or a scheduler starts it
(embedgen byte-compiled first, as ``pip install`` leaves it; an editable checkout under
``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module in every process, ~0.08 s):

- ``embedgen run INPUT -o OUT --no-cache`` with the default model, against the plain fp32
  loop a competent engineer writes (this file run with ``--loop``: tokenizers, length-sorted
  batches of 32, onnxruntime with default session options on the fp32 export of
  ``scripts/export_fp32.py``, mean pooling, L2 normalisation), on the first 20,000 and
  5,000 rows of a short-text corpus that fit one chunk (so both embed the same texts);
  rounds alternate which runs first, and each figure is the median of the rounds;
- ``embedgen --help``; the smallest run (20 texts, default model), without the cache and as
  a first run (an empty cache directory); a fully cached re-run of 20,000 texts (the cache
  filled by an untimed run first), as it runs (the output is up to date: nothing is read
  or written) and with ``rerun_unchanged`` (every row looked up in the cache and the output
  written again).

It prints the chunks and tokens each side embedded, and the cosine of embedgen's vectors
to the fp32 loop's (which equals sentence-transformers to 1e-7, see export_fp32.py).

    python scripts/bench.py --input bench-data/short_20k.parquet --process /work/assets/minilm-fp32

(``bench.py --process`` runs :func:`section`; this file alone: ``--loop FOLDER INPUT OUT``.)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = (20_000, 5_000)
TARGETS = {20_000: 2.2, 5_000: 1.9}
HERE = Path(__file__).resolve()


def reference_loop(folder: Path, input_path: Path, out: Path) -> None:
    """The plain fp32 loop, as its own process: vectors to ``out`` (.npy), counts on stdout."""
    import numpy as np
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE.parent))
    import plain_loop

    texts = pq.read_table(input_path, columns=["text"])[0].to_pylist()
    vectors, tokens = plain_loop.embed(
        texts, folder / "tokenizer.json", folder / "model.onnx", max_tokens=256
    )
    np.save(out, vectors)
    print(json.dumps({"chunks": len(texts), "tokens": tokens}))


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def _embedgen(*args: str) -> list[str]:
    return [sys.executable, "-m", "embedgen", *args]


def _output_counts(path: Path) -> tuple[int, int, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["tokens", "embedding"])
    vectors = np.array(table.column("embedding").to_pylist(), np.float32)
    return table.num_rows, int(sum(table.column("tokens").to_pylist())), vectors


def _one_chunk_rows(table: Any, tokenizer: Path) -> Any:
    """The rows whose text fits one 256-token chunk, so both sides embed the same texts."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_truncation()
    tok.no_padding()
    texts = table.column("text").to_pylist()
    keep = [i for i, e in enumerate(tok.encode_batch(texts)) if len(e.ids) <= 256]
    return table.take(keep)


def measure(input_path: Path, fp32: Path, rounds: int, sizes: tuple[int, ...]) -> list[str]:
    """Run every figure; the report's lines."""
    import numpy as np
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE.parent))
    from bench_cache import compile_package

    compile_package()  # as `pip install` leaves it: no process compiles embedgen's modules
    lines = []
    with tempfile.TemporaryDirectory(prefix="embedgen-bench-process-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, EMBEDGEN_CACHE_DIR=str(work / "cache"))
        table = _one_chunk_rows(pq.read_table(input_path), fp32 / "tokenizer.json")
        inputs = {}
        for n in (*sizes, 20):
            inputs[n] = work / f"short_{n}.parquet"
            pq.write_table(table.slice(0, n), inputs[n])
        _timed(_embedgen("run", str(inputs[20]), "-o", str(work / "warm.parquet"), "--no-cache",
                         "--quiet"), env)  # fmt: skip  # builds the default's variant once
        for n in sizes:
            ours, ref = [], []
            out, vec = work / f"out_{n}.parquet", work / f"ref_{n}.npy"
            run = _embedgen("run", str(inputs[n]), "-o", str(out), "--no-cache", "--quiet")
            loop = [sys.executable, str(HERE), "--loop", str(fp32), str(inputs[n]), str(vec)]
            counts: dict[str, Any] = {}
            for r in range(rounds):
                order = (run, loop) if r % 2 == 0 else (loop, run)
                for cmd in order:
                    seconds, stdout = _timed(cmd, env)
                    (ours if cmd is run else ref).append(seconds)
                    if cmd is loop:
                        counts = json.loads(stdout.strip().splitlines()[-1])
                # each round as it ends: a run cut short by a time limit still shows its rounds
                said = f"embedgen {ours[-1]:.2f} s, fp32 loop {ref[-1]:.2f} s"
                ratio = ref[-1] / ours[-1]
                print(f"  {n:,} texts, round {r + 1}: {said} ({ratio:.2f}x)", flush=True)
            chunks, tokens, vectors = _output_counts(out)
            cos = (vectors * np.load(vec)).sum(axis=1)
            a, b = statistics.median(ours), statistics.median(ref)
            target = TARGETS.get(n)
            verdict = f" (target >= {target}x)" if target else ""
            lines += [
                f"{n:,} short texts: embedgen {chunks:,} chunks / {tokens:,} tokens, "
                f"fp32 loop {counts['chunks']:,} chunks / {counts['tokens']:,} tokens",
                f"  embedgen median {a:.2f} s {[round(x, 2) for x in ours]}; "
                f"fp32 loop median {b:.2f} s {[round(x, 2) for x in ref]}",
                f"  speed-up {b / a:.2f}x{verdict}; cosine to the fp32 loop: "
                f"mean {cos.mean():.5f}, min {cos.min():.5f}",
            ]
        startup = {
            "embedgen --help": _embedgen("--help"),
            "smallest run (20 texts, no cache)": _embedgen(
                "run", str(inputs[20]), "-o", str(work / "o20.parquet"), "--no-cache", "--quiet"
            ),
        }
        biggest = max(sizes)
        cached = _embedgen("run", str(inputs[biggest]), "-o", str(work / "c.parquet"), "--quiet")
        _timed(cached, env)  # fills the cache
        startup[f"fully cached re-run ({biggest:,} texts), output up to date"] = cached
        rerun = work / "rerun.toml"
        rerun.write_text("[run]\nrerun_unchanged = true\n", encoding="utf-8")
        startup[f"fully cached re-run ({biggest:,} texts), rewritten (rerun_unchanged)"] = [
            *cached,
            "--config",
            str(rerun),
        ]
        for name, cmd in startup.items():
            times = sorted(_timed(cmd, env)[0] for _ in range(max(rounds, 5)))
            lines.append(f"{name}: median {statistics.median(times):.3f} s, best {times[0]:.3f} s")
        first = []  # a new user's first run: the cache directory does not exist yet
        for i in range(max(rounds, 5)):
            out, cache = str(work / f"first{i}.parquet"), str(work / f"first-cache{i}")
            run = _embedgen("run", str(inputs[20]), "-o", out, "--cache-dir", cache, "--quiet")
            first.append(_timed(run, env)[0])
        first.sort()
        lines.append(
            f"smallest run (20 texts, first run: empty cache): "
            f"median {statistics.median(first):.3f} s, best {first[0]:.3f} s"
        )
    return lines


def section(input_path: Path, fp32: Path, rounds: int, limit: int | None = None) -> None:
    """The ``bench.py --process`` section."""
    sizes = tuple(n for n in SIZES if limit is None or n <= limit) or (limit or SIZES[-1],)
    print(f"\n== whole processes, #22 (rounds {rounds}, alternating, medians)")
    for line in measure(input_path, fp32, rounds, sizes):
        print(line)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--loop":
        reference_loop(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
