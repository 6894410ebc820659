"""Every output type x dimension of one corpus: written, read back, checked, sized.

Embeds the corpus once per dimension (``--dims``: the full one and Matryoshka cuts, forced
on a model not trained for it), then writes every ``--vector-dtype`` from the cache, reads each
file back with :func:`embedgen.pipeline.vectors.read_float` and checks it against the
float32 file of the same dimension: float16 within 1e-3, int8/uint8 within range/255 per
dimension, binary/ubinary exactly the sign bits. Prints sizes as a Markdown table.

    python scripts/make_corpus.py --out bench-data
    python scripts/bench_vectors.py bench-data/short_20k.parquet --out /tmp/vectors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import embedgen
from embedgen.pipeline.vectors import read_float
from embedgen.util.quantize import VECTOR_DTYPES, bytes_per_vector


def file_step(path: Path) -> np.ndarray:
    """The int8/uint8 step per dimension that ``path``'s metadata records."""
    meta = json.loads(pq.ParquetFile(path).schema_arrow.metadata[b"embedgen.vectors"])
    return np.asarray(meta["embedding"]["ranges"]["step"], dtype=np.float32)


def check(dtype: str, back: np.ndarray, ref: np.ndarray, path: Path) -> tuple[bool, float]:
    """(within precision, worst error as a share of the allowed one)."""
    if dtype in ("float32", "float16"):
        err = float(np.abs(back - ref).max())
        return err <= (0 if dtype == "float32" else 1e-3), err
    if dtype in ("binary", "ubinary"):
        same = np.array_equal(back, np.where(ref > 0, 1.0, -1.0))
        return same, 0.0 if same else 1.0
    # A value comes back within the observed range / 255 of its dimension, and never beyond
    # half the file's step (nothing clipped): the second is the bound on a dimension whose
    # range is float noise (all-MiniLM-L6-v2's 319), widened to NOISE_FLOOR on fitting.
    allowed = np.maximum((ref.max(axis=0) - ref.min(axis=0)) / 255, file_step(path) / 2)
    share = float((np.abs(back - ref).max(axis=0) / np.where(allowed > 0, allowed, 1)).max())
    return share <= 1.0 + 1e-4, share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--out", default="vectors-bench")
    ap.add_argument("--dims", default="full,256,128", help="Dimensions: full and Matryoshka cuts.")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dims in [None if d == "full" else int(d) for d in args.dims.split(",")]:
        cut = {"dimensions": dims, "force_dimensions": True} if dims else {}
        ref_path = out / f"float32-{dims or 'full'}.parquet"
        started = time.perf_counter()
        s = embedgen.embed_corpus(args.corpus, ref_path, quiet=True, **cut)
        print(
            f"dims {dims or 'full'}: {s.chunks:,} chunks embedded in "
            f"{time.perf_counter() - started:.0f} s ({s.computed:,} computed)",
            flush=True,
        )
        ref = read_float(ref_path)
        for dtype in VECTOR_DTYPES:
            path = out / f"{dtype}-{dims or 'full'}.parquet"
            again = embedgen.embed_corpus(args.corpus, path, quiet=True, vector_dtype=dtype,
                                          **cut)  # fmt: skip
            back = read_float(path)
            ok, worst = check(dtype, back, ref, path)
            column = pq.ParquetFile(path).metadata
            vec_bytes = sum(
                column.row_group(i).column(j).total_compressed_size
                for i in range(column.num_row_groups)
                for j in range(column.num_columns)
                if column.row_group(i).column(j).path_in_schema.startswith("embedding")
            )
            rows.append({
                "dtype": dtype, "dimensions": ref.shape[1], "rows": len(back),
                "recomputed": again.computed, "within_precision": ok, "worst": round(worst, 4),
                "file_bytes": path.stat().st_size, "vector_column_bytes": vec_bytes,
                "bytes_per_vector": bytes_per_vector(dtype, ref.shape[1]),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    print("\n| dtype | dims | bytes/vector | vector column | file | within precision |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['dimensions']} | {r['bytes_per_vector']:,} | "
              f"{r['vector_column_bytes'] / 1e6:.2f} MB | {r['file_bytes'] / 1e6:.2f} MB | "
              f"{'yes' if r['within_precision'] else 'NO'} |")  # fmt: skip


if __name__ == "__main__":
    main()
