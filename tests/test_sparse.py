"""BGE-M3 sparse (lexical) weights: the FlagEmbedding rule, head formats, the stand-in graph."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hub_server import build_onnx, build_tokenizer, standin_weights, write_torch_linear

from embedgen.errors import ModelError
from embedgen.models.onnx_info import find_sparse_head
from embedgen.providers.sparse import (
    SparseHead,
    lexical_weights,
    load_sparse_head,
    read_safetensors,
    special_token_ids,
    token_weights,
    weights_from_outputs,
)

# XLM-R ids: <s>=0 <pad>=1 </s>=2 <unk>=3
SPECIAL = {0, 1, 2, 3}


def test_lexical_weights_hand_computed() -> None:
    ids = np.array([[0, 17, 42, 17, 3, 9, 2, 1], [0, 5, 5, 2, 1, 1, 1, 1]])
    mask = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    w = np.array(
        [
            [0.9, 0.2, 0.5, 0.7, 0.8, 0.0, 0.6, 0.4],  # 17 twice -> max 0.7; 9 has 0 -> dropped
            [0.3, 0.1, 0.25, 0.5, 0.9, 0.9, 0.9, 0.9],  # 5 twice -> 0.25; padding ignored
        ],
        dtype=np.float32,
    )
    got = lexical_weights(w, ids, mask, SPECIAL)
    assert got == [{17: pytest.approx(0.7), 42: pytest.approx(0.5)}, {5: pytest.approx(0.25)}]
    # without a mask, pad ids are still removed as special tokens
    assert lexical_weights(w[1:], ids[1:], None, SPECIAL) == [{5: pytest.approx(0.25)}]
    with pytest.raises(ModelError):
        lexical_weights(w[:, :4], ids, mask, SPECIAL)


def test_token_weights_is_relu_of_linear() -> None:
    hidden = np.array([[[1.0, 2.0], [-1.0, -2.0], [0.5, 0.0]]], dtype=np.float32)
    head = SparseHead(weight=np.array([0.5, 0.25], dtype=np.float32), bias=-0.1)
    # 0.5+0.5-0.1 = 0.9 ; -0.5-0.5-0.1 < 0 -> 0 ; 0.25-0.1 = 0.15
    assert np.allclose(token_weights(hidden, head), [[0.9, 0.0, 0.15]])
    with pytest.raises(ModelError):
        token_weights(hidden[..., :1], head)
    # from named outputs: the graph's sparse_weights wins, else the head on the token states
    assert np.allclose(weights_from_outputs({"last_hidden_state": hidden}, head), [[0.9, 0, 0.15]])
    graph = {"sparse_weights": np.array([[[0.3], [0.0], [0.2]]], dtype=np.float32)}
    assert np.allclose(weights_from_outputs(graph, None), [[0.3, 0.0, 0.2]])
    with pytest.raises(ModelError):
        weights_from_outputs({"last_hidden_state": hidden}, None)


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "pt"])
def test_head_formats_read_the_same(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1, 16)).astype(np.float32)
    bias = np.array([0.125], dtype=np.float32)
    path = tmp_path / f"sparse_linear.{fmt}"
    if fmt == "safetensors":
        _write_safetensors(path, {"weight": weight, "bias": bias})
    elif fmt == "npz":
        np.savez(path, weight=weight, bias=bias)
    else:
        write_torch_linear(path, weight, bias)
    head = load_sparse_head(path)
    assert np.array_equal(head.weight, weight[0]) and head.bias == pytest.approx(0.125)
    assert find_sparse_head(tmp_path) == path


def test_safetensors_matches_the_reference_writer(tmp_path: Path) -> None:
    import safetensors.numpy as st

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    st.save_file({"weight": arr, "bias": np.ones(1, np.float32)}, str(tmp_path / "h.safetensors"))
    got = read_safetensors(tmp_path / "h.safetensors")
    assert np.array_equal(got["weight"], arr)


def test_bfloat16_safetensors_head_is_widened(tmp_path: Path) -> None:
    """numpy has no bfloat16: a BF16 head (as some exports ship) still reads, as float32."""
    weight = np.array([[1.0, -2.5, 0.15625, 3.0]], dtype=np.float32)  # exact in bfloat16
    raw = (weight.view(np.uint32) >> 16).astype("<u2").tobytes()
    bias = np.array([0.5], dtype="<f4").tobytes()
    header = {
        "weight": {"dtype": "BF16", "shape": [1, 4], "data_offsets": [0, len(raw)]},
        "bias": {"dtype": "F32", "shape": [1], "data_offsets": [len(raw), len(raw) + 4]},
    }
    blob = json.dumps(header).encode()
    path = tmp_path / "sparse_linear.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw + bias)
    head = load_sparse_head(path)
    assert head.weight.dtype == np.float32 and np.array_equal(head.weight, weight[0])
    assert head.bias == 0.5


def test_torch_file_cannot_run_code(tmp_path: Path) -> None:
    """A .pt whose pickle calls os.system is refused before anything runs."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "sparse_linear.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weight": Evil()}, protocol=2))
    with pytest.raises(ModelError, match="refusing to load"):
        load_sparse_head(path)
    assert not marker.exists()


def test_bad_head_files(tmp_path: Path) -> None:
    bad = tmp_path / "sparse_linear.safetensors"
    bad.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(ModelError, match="unreadable sparse head"):
        load_sparse_head(bad)
    np.savez(tmp_path / "x.npz", bias=np.zeros(1, np.float32))
    with pytest.raises(ModelError, match="no 'weight'"):
        load_sparse_head(tmp_path / "x.npz")


def test_stand_in_graph_and_head_agree(tmp_path: Path) -> None:
    """The graph's sparse_weights output and the .pt head on last_hidden_state give the
    same lexical weights, equal to a direct numpy computation."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    vocab = build_tokenizer(tmp_path)
    w = standin_weights(vocab, 64)
    build_onnx(tmp_path, w, sparse_output=True)
    write_torch_linear(tmp_path / "sparse_linear.pt", w["sparse_w"].T, w["sparse_b"])
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok.enable_padding(pad_id=1, pad_token="<pad>")
    encs = tok.encode_batch(["The quick brown fox jumps over the fox.", "Embeddings."])
    ids = np.array([e.ids for e in encs], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outputs = dict(
        zip(names, sess.run(None, {"input_ids": ids, "attention_mask": mask}), strict=True)
    )
    special = special_token_ids(tmp_path / "tokenizer.json")
    assert special == SPECIAL
    head = load_sparse_head(find_sparse_head(tmp_path))
    from_graph = lexical_weights(weights_from_outputs(outputs, None), ids, mask, special)
    only_hidden = {"last_hidden_state": outputs["last_hidden_state"]}
    from_head = lexical_weights(weights_from_outputs(only_hidden, head), ids, mask, special)
    h = np.tanh(w["emb"][ids] + w["bias"]) * mask[..., None]
    ref_w = np.maximum(h @ w["sparse_w"][:, 0] + w["sparse_b"][0], 0)
    for row in range(len(encs)):
        ref: dict[int, float] = {}
        for i, x, m in zip(ids[row], ref_w[row], mask[row], strict=True):
            if m and int(i) not in SPECIAL and x > 0:
                ref[int(i)] = max(ref.get(int(i), 0.0), float(x))
        assert ref, "the example must produce some weights"
        for got in (from_graph[row], from_head[row]):
            assert got.keys() == ref.keys()
            assert all(got[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-6) for k in ref)
