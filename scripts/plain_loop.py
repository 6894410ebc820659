"""The plain fp32 reference loop every benchmark compares embedgen with.

What a competent engineer writes: ``tokenizers`` with truncation, length-sorted batches of
32, onnxruntime on the CPU, mean (or CLS) pooling and L2 normalisation. It imports only
numpy, onnxruntime and tokenizers, so a whole-process run of it pays no other start-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BATCH_SIZE = 32


def embed(
    texts: list[str],
    tokenizer_path: Path,
    onnx_path: Path,
    *,
    max_tokens: int,
    pooling: str = "mean",
    normalize: bool = True,
) -> tuple[np.ndarray, int]:
    """``texts`` embedded by the plain loop, and the tokens it ran."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wants_types = any(i.name == "token_type_ids" for i in session.get_inputs())
    encodings = tok.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    vectors = np.zeros((len(texts), 0), np.float32)
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start : start + BATCH_SIZE]
        width = max(len(encodings[i].ids) for i in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            n = len(encodings[i].ids)
            ids[r, :n] = encodings[i].ids
            mask[r, :n] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if wants_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        if normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        if vectors.shape[1] == 0:
            vectors = np.zeros((len(texts), pooled.shape[1]), np.float32)
        vectors[rows] = pooled
    return vectors, sum(len(e.ids) for e in encodings)
