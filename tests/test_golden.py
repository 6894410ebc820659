"""Golden vectors: the embedded default model against sentence-transformers.

tests/data/golden_minilm.json holds vectors of all-MiniLM-L6-v2 computed by
sentence-transformers (fp32, torch; regenerate with scripts/make_golden.py). The
embedded default is an int8 quantisation of the same model, so vectors differ a
little; every sentence must still reach cosine >= 0.99.

Two paths are checked: a minimal onnxruntime + tokenizers mean-pooling loop written
here (independent of embedgen's pipeline), and ``embedgen.embed_corpus`` end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedgen.models.local import default_model

GOLDEN = Path(__file__).parent / "data" / "golden_minilm.json"
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text("utf-8"))


def _texts_and_vectors(golden: dict) -> tuple[list[str], np.ndarray]:
    texts = [item["text"] for item in golden["items"]]
    vectors = np.array([item["vector"] for item in golden["items"]], dtype=np.float32)
    return texts, vectors


def _reference_embed(texts: list[str], batch_size: int = 8) -> np.ndarray:
    """Mean-pooled, L2-normalised vectors of the default model, without embedgen's pipeline."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    spec = default_model()
    tok = Tokenizer.from_file(str(spec.tokenizer_path))
    tok.no_padding()
    tok.no_truncation()
    tok.enable_truncation(max_length=spec.max_tokens)
    sess = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tok.encode_batch(texts[start : start + batch_size])
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = sess.run(None, feeds)[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _assert_close(texts: list[str], got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    cos = _cosines(got, want)
    bad = [f"{c:.5f} {t[:40]!r}" for t, c in zip(texts, cos, strict=True) if not c >= MIN_COSINE]
    assert not bad, f"cosine below {MIN_COSINE}: {bad}"


def test_golden_file_is_well_formed(golden: dict) -> None:
    texts, vectors = _texts_and_vectors(golden)
    assert len(texts) >= 20 and len(set(texts)) == len(texts)
    assert vectors.shape == (len(texts), golden["dim"]) == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert all(item["tokens"] < golden["max_seq_length"] for item in golden["items"])


def test_reference_loop_matches_sentence_transformers(golden: dict) -> None:
    texts, want = _texts_and_vectors(golden)
    got = _reference_embed(texts)
    _assert_close(texts, got, want)
    # The comparison discriminates: pairing each sentence with another one's vector fails.
    shifted = _cosines(got, np.roll(want, 1, axis=0))
    assert (shifted < MIN_COSINE).all()


def test_embed_corpus_matches_sentence_transformers(golden: dict, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import embedgen

    texts, want = _texts_and_vectors(golden)
    ids = [f"g{i:02d}" for i in range(len(texts))]
    src = tmp_path / "golden.parquet"
    dst = tmp_path / "golden.embeddings.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), src)
    summary = embedgen.embed_corpus(src, dst, quiet=True, id_column="id")
    table = pq.read_table(dst)
    assert summary.documents == summary.chunks == len(texts), "each sentence is one chunk"
    assert table.column("id").to_pylist() == ids, "output keeps input order"
    assert table.column("chunk").to_pylist() == [0] * len(texts)
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    _assert_close(texts, got, want)
