"""bge-m3's ColBERT multi-vectors on the stand-in graph: FlagEmbedding's rule, one pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import build_onnx, build_tokenizer, standin_weights, write_torch_linear
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.errors import ModelError
from embedgen.providers.colbert import ColbertHead, colbert_vectors, load_colbert_head

runner = CliRunner()
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Embeddings.", "fox"]
HIDDEN, COLBERT_DIM = 32, 24


def standin(root: Path) -> dict:
    """A bge-m3 stand-in folder with sparse_linear.pt and colbert_linear.pt heads."""
    vocab = build_tokenizer(root)
    w = standin_weights(vocab, HIDDEN)
    build_onnx(root, w, sparse_output=False)
    (root / "config.json").write_text(json.dumps({"hidden_size": HIDDEN}))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    write_torch_linear(root / "sparse_linear.pt", w["sparse_w"].T, w["sparse_b"])
    rng = np.random.default_rng(3)
    w["colbert_w"] = rng.normal(0, 0.2, (COLBERT_DIM, HIDDEN)).astype(np.float32)
    w["colbert_b"] = rng.normal(0, 0.1, (COLBERT_DIM,)).astype(np.float32)
    write_torch_linear(root / "colbert_linear.pt", w["colbert_w"], w["colbert_b"])
    return w


def reference(root: Path, w: dict, text: str) -> np.ndarray:
    """FlagEmbedding: colbert_linear(h[:, 1:]) masked, the first n-1, L2-normalised."""
    from tokenizers import Tokenizer

    ids = np.array(Tokenizer.from_file(str(root / "tokenizer.json")).encode(text).ids)
    h = np.tanh(w["emb"][ids] + w["bias"])
    v = h[1:] @ w["colbert_w"].T + w["colbert_b"]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_head_reads_and_masks(tmp_path: Path) -> None:
    w = standin(tmp_path)
    head = load_colbert_head(tmp_path / "colbert_linear.pt")
    assert head.dim == COLBERT_DIM
    np.testing.assert_array_equal(head.weight, w["colbert_w"])
    hidden = np.ones((2, 4, HIDDEN), np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = colbert_vectors(hidden, mask, head)
    assert [v.shape for v in out] == [(3, COLBERT_DIM), (1, COLBERT_DIM)]
    with pytest.raises(ModelError, match="width"):
        colbert_vectors(np.ones((1, 2, 5), np.float32), mask[:1, :2], head)
    with pytest.raises(ModelError, match="dim, hidden"):
        bad = tmp_path / "bad.npz"
        np.savez(bad, weight=np.ones(3, np.float32))
        load_colbert_head(bad)
    assert isinstance(head, ColbertHead)


def test_run_writes_colbert_beside_dense_and_sparse(tmp_path: Path) -> None:
    model = tmp_path / "m3"
    w = standin(model)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[model]\nmodel = "{model}"\n[run]\nsparse = true\ncolbert = true\n')
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.field("colbert").type == pa.list_(pa.list_(pa.float32(), COLBERT_DIM))
    assert table.schema.field("sparse").type == pa.map_(pa.int32(), pa.float32())
    for text, row in zip(TEXTS, table.column("colbert").to_pylist()):
        np.testing.assert_allclose(np.array(row), reference(model, w, text), atol=1e-5)
    # the dense vector comes from the same pass: CLS, normalised, as without colbert
    plain = tmp_path / "plain.parquet"
    again = runner.invoke(app, ["run", str(src), "--model", str(model), "-o", str(plain), "-q"])
    assert again.exit_code == 0, again.output
    np.testing.assert_allclose(
        np.array(table.column("embedding").to_pylist()),
        np.array(pq.read_table(plain).column("embedding").to_pylist()),
        atol=1e-6,
    )


def test_colbert_needs_a_head(write_parquet) -> None:
    src = write_parquet({"text": TEXTS})
    cfg = src.with_name("c.toml")
    cfg.write_text("[run]\ncolbert = true\n")
    result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-q"])
    assert result.exit_code == 1
    assert "colbert output needs a model with a colbert head" in result.output


def test_bge_m3_slot_beside_the_default(tmp_path: Path) -> None:
    """A slot with outputs dense + sparse + colbert beside the default model, one pass."""
    model = tmp_path / "m3"
    w = standin(model)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[slots.m3]\nmodel = "{model}"\noutputs = ["dense", "sparse", "colbert"]\n'
                   '[slots.fast]\nmodel = "default"\n')  # fmt: skip
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.field("colbert_m3").type == pa.list_(pa.list_(pa.float32(), COLBERT_DIM))
    assert "sparse_m3" in table.schema.names and "tokens_fast" in table.schema.names
    for text, row in zip(TEXTS, table.column("colbert_m3").to_pylist()):
        np.testing.assert_allclose(np.array(row), reference(model, w, text), atol=1e-5)
