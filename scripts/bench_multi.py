"""Several models in one pass against one run per model (issue #21's acceptance figures).

For each corpus (short texts, long documents), with ``--max-tokens 128 --overlap 16``:

- one ``embedgen run`` with three slots: the default (int8), the packaged default as
  shipped (fp32, ``default-original``) and an OpenAI-compatible API on a loopback server
  (``tests/api_servers.py``, vectors a known function of the text);
- one ``embedgen run`` per model alone.

Every run is a fresh process with a fresh cache, timed whole. The report gives the times,
the multi-model run against the sum of the single ones, and checks the columns: the API's
exactly the server's vectors, fp32 and int8 by cosine to the single-model run on the rows
cut alike, and every chunk's text within every model's limit by its own tokenizer.

    python scripts/make_corpus.py --out bench-data
    python scripts/bench_multi.py --short bench-data/short_20k.parquet --fp32 FP32_FOLDER \\
        --long bench-data/long.parquet --long-limit 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.api_servers import ApiServer, vector_for  # noqa: E402

KEY = "sk-bench-multi-0123456789abcdef"
MODEL = "BAAI/bge-small-en-v1.5"
CHUNKING = ["--max-tokens", "128", "--overlap", "16"]
SLOTS = {"fast": "default", "fp32": "default-original", "api": "api"}


def timed_run(args: list[str], cache: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "embedgen", "run", *args, "--cache-dir",
                           str(cache), "-q"], env=env, capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"embedgen run {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started


def spans(table) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in ("id", "char_start", "char_end"))))


def check(multi: Path, singles: dict[str, Path]) -> dict[str, object]:
    from embedgen.models.local import resolve_model
    from embedgen.providers.api_tokenizers import BpeTokenizer
    from embedgen.providers.hf_tokenizer import HFTokenizer

    table = pq.read_table(multi)
    texts = table.column("text").to_pylist()
    out: dict[str, object] = {"rows": table.num_rows}
    api = np.array(table.column("embedding_api").to_pylist(), dtype=np.float32)
    out["api_exact"] = bool((api == np.array([vector_for(t, 8, MODEL) for t in texts])).all())
    keys = spans(table)
    for name in ("fp32", "fast"):
        ref = pq.read_table(singles[name])
        by_span = dict(zip(spans(ref), ref.column("embedding").to_numpy(zero_copy_only=False)))
        rows = [i for i, k in enumerate(keys) if k in by_span]
        a = np.stack(table.column(f"embedding_{name}").take(rows).to_numpy(zero_copy_only=False))
        b = np.stack([by_span[keys[i]] for i in rows])
        cos = (a * b).sum(1)
        out[f"{name}_rows_cut_alike"] = f"{len(rows)}/{len(keys)}"
        out[f"{name}_min_cosine"] = round(float(cos.min()), 7)
    minilm = HFTokenizer(resolve_model("default").tokenizer_path)
    bpe = BpeTokenizer("cl100k_base")
    over = 0
    for tok in (minilm, bpe):
        for ids, _ in tok.encode_offsets(texts):
            over += len(ids) + tok.overhead > 128
    out["chunks_over_a_limit"] = over
    return out


def bench(corpus: Path, limit: int | None, server: ApiServer, work: Path) -> dict[str, object]:
    """The single-model runs and the multi-model run of ``corpus``, timed and checked."""
    cfg = work / "c.toml"
    cfg.write_text(f'[providers.api]\nkind = "openai_compatible"\nbase_url = "{server.url}/v1"\n'
                   f'model = "{MODEL}"\ndim = 8\napi_key_env = "EG_KEY"\n'
                   'tokenizer = "cl100k_base"\nmax_concurrency = 4\n')  # fmt: skip
    env = {**os.environ, "EG_KEY": KEY, "PYTHONPATH": str(ROOT)}
    base = [str(corpus), "-c", str(cfg), *CHUNKING] + (["--limit", str(limit)] if limit else [])
    times: dict[str, float] = {}
    singles: dict[str, Path] = {}
    for name, spec in SLOTS.items():
        singles[name] = work / f"{name}.parquet"
        if name == "api":  # a config provider as the run's chain
            args = [*base, "-o", str(singles[name])]
            cfg_api = work / "api.toml"
            cfg_api.write_text(cfg.read_text() + '[run]\nproviders = ["api"]\n')
            args[2] = str(cfg_api)
        else:
            args = [*base, "--model", spec, "-o", str(singles[name])]
        times[name] = timed_run(args, work / f"cache-{name}", env)
    multi = work / "multi.parquet"
    slots = [x for n, s in SLOTS.items() for x in ("--model", f"{n}={s}")]
    times["multi"] = timed_run([*base, *slots, "-o", str(multi)], work / "cache-multi", env)
    single_sum = sum(times[n] for n in SLOTS)
    return {
        "corpus": str(corpus),
        "limit": limit,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "multi_over_sum_of_singles": round(times["multi"] / single_sum, 3),
        **check(multi, singles),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=Path, required=True)
    parser.add_argument("--long", type=Path)
    parser.add_argument("--short-limit", type=int)
    parser.add_argument("--long-limit", type=int)
    parser.add_argument(
        "--fp32",
        type=Path,
        help="an fp32 MiniLM folder for the fp32 slot "
        "(scripts/export_fp32.py; default: the packaged default as shipped)",
    )
    args = parser.parse_args()
    if args.fp32:
        SLOTS["fp32"] = str(args.fp32)
    report = []
    with ApiServer("openai", key=KEY, dim=8, model=MODEL) as server:
        runs = [(args.short, args.short_limit)]
        if args.long:
            runs.append((args.long, args.long_limit))
        for corpus, limit in runs:
            with tempfile.TemporaryDirectory() as tmp:
                report.append(bench(corpus, limit, server, Path(tmp)))
                print(json.dumps(report[-1], indent=2), flush=True)


if __name__ == "__main__":
    main()
