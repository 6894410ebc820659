"""Where the default model's time goes: onnxruntime's per-operator profile, two ways.

The same texts (the first ``--limit`` rows of a corpus, tokenized and cut as a run cuts
them) go through the default int8 model:

- ``batched``: length-sorted padded batches of 32 on one session with two intra-op
  threads (how the default ran before #22);
- ``per text``: each text alone, two calls side by side on single-threaded sessions'
  shared session (how it runs now).

For each, onnxruntime's profiler (``SessionOptions.enable_profiling``) records every
node; this prints the wall time, the summed node time per operator type and its share,
top first. Node times of the two calls side by side add up, so ``per text`` sums can
exceed its wall time.

    python scripts/profile_ops.py bench-data/short_20k.parquet --limit 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _texts(path: Path, limit: int) -> list[str]:
    import pyarrow.parquet as pq

    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return [t for t in texts if t][:limit]


def _session(model: Path, threads: int, profile_prefix: str):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.enable_profiling = True
    so.profile_file_prefix = profile_prefix
    so.log_severity_level = 3
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def _feeds(rows: list[list[int]]) -> dict[str, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _by_op(trace: Path) -> dict[str, float]:
    """Summed node durations (seconds) per operator type in one profile file."""
    totals: dict[str, float] = defaultdict(float)
    for event in json.loads(trace.read_text()):
        args = event.get("args") or {}
        kernel = event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
        if kernel and "op_name" in args:
            totals[args["op_name"]] += event["dur"] / 1e6
    return dict(totals)


def profile(
    model: Path, ids: list[list[int]], mode: str, tmp: Path
) -> tuple[float, dict[str, float]]:
    if mode == "batched":
        session = _session(model, 2, str(tmp / "batched"))
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        started = time.perf_counter()
        for k in range(0, len(order), 32):
            session.run(None, _feeds([ids[i] for i in order[k : k + 32]]))
    else:
        session = _session(model, 1, str(tmp / "per-text"))
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda row: session.run(None, _feeds([row])), ids, chunksize=16))
    wall = time.perf_counter() - started
    return wall, _by_op(Path(session.end_profiling()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="Parquet with a text column")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)

    from embedgen.models.local import default_model
    from embedgen.providers.hf_tokenizer import HFTokenizer

    spec = default_model(announce=False)
    tok = HFTokenizer(spec.tokenizer_path)
    room = spec.max_tokens - tok.overhead
    texts = _texts(args.input, args.limit)
    ids = [tok.model_inputs(found[:room]) for found, _ in tok.encode_offsets(texts)]
    tokens = sum(len(r) for r in ids)
    print(f"{len(ids):,} texts, {tokens:,} tokens, model {spec.onnx_path.parent.name}")
    with tempfile.TemporaryDirectory(prefix="embedgen-profile-") as tmp:
        for mode in ("batched", "per text"):
            wall, ops = profile(spec.onnx_path, ids, mode, Path(tmp))
            total = sum(ops.values())
            print(f"\n{mode}: {wall:.2f} s wall, {total:.2f} s in nodes")
            for op, secs in sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]:
                print(f"  {op:<24} {secs:7.2f} s  {secs / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
