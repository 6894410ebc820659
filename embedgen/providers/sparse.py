"""BGE-M3 sparse (lexical) weights, as FlagEmbedding computes them, in numpy only.

Per-token weights come either from the graph's ``sparse_weights`` output or from the
``sparse_linear`` head applied to the token states: ``relu(hidden @ w + b)``. Each
text's lexical weights are a dict token id -> weight, keeping the largest weight of
a repeated id, without special tokens (cls, eos, pad, unk) or zero weights.

The head (found by :func:`embedgen.models.onnx_info.find_sparse_head`) is read from
``sparse_linear.safetensors`` (with ``safetensors.numpy``), ``sparse_linear.npz`` or
FlagEmbedding's ``sparse_linear.pt``; the ``.pt`` is unpickled with an allow-list (no
code from the file runs, and torch is not needed).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.errors import ModelError
from embedgen.models.onnx_info import SPARSE_OUTPUT

TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
_SPECIAL_KEYS = ("cls_token", "eos_token", "pad_token", "unk_token")
_SPECIAL_FALLBACK = ("<s>", "</s>", "<pad>", "<unk>", "[CLS]", "[PAD]", "[UNK]")


@dataclass(frozen=True)
class SparseHead:
    """``sparse_linear``: a Linear(hidden, 1) layer."""

    weight: np.ndarray
    """float32, shape (hidden,)."""
    bias: float


def token_weights(hidden: np.ndarray, head: SparseHead) -> np.ndarray:
    """``relu(hidden @ w + b)``: (batch, seq, hidden) -> (batch, seq) float32."""
    if hidden.ndim != 3 or hidden.shape[-1] != head.weight.shape[0]:
        raise ModelError(
            f"sparse head expects token states of width {head.weight.shape[0]}, "
            f"got shape {tuple(hidden.shape)}"
        )
    out = hidden.astype(np.float32) @ head.weight + np.float32(head.bias)
    return np.maximum(out, 0.0).astype(np.float32)


def weights_from_outputs(outputs: Mapping[str, np.ndarray], head: SparseHead | None) -> np.ndarray:
    """Per-token weights (batch, seq) from a session's named outputs."""
    if SPARSE_OUTPUT in outputs:
        w = np.asarray(outputs[SPARSE_OUTPUT], dtype=np.float32)
        return w[..., 0] if w.ndim == 3 else w
    if head is None:
        raise ModelError("the model has no sparse_weights output and no sparse_linear head")
    hidden = next((outputs[n] for n in TOKEN_OUTPUTS if n in outputs), None)
    if hidden is None:
        raise ModelError(f"no token states for the sparse head (need one of {TOKEN_OUTPUTS})")
    return token_weights(np.asarray(hidden), head)


def lexical_weights(
    weights: np.ndarray,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None,
    special_ids: Iterable[int],
) -> list[dict[int, float]]:
    """FlagEmbedding's lexical weights: per text, token id -> max weight, specials dropped."""
    weights = np.asarray(weights, dtype=np.float32)
    ids = np.asarray(input_ids)
    if weights.shape != ids.shape:
        raise ModelError(f"sparse weights {weights.shape} do not match input ids {ids.shape}")
    mask = (
        np.ones_like(ids, dtype=bool) if attention_mask is None else np.asarray(attention_mask) > 0
    )
    skip = set(int(i) for i in special_ids)
    result: list[dict[int, float]] = []
    for row_w, row_ids, row_m in zip(weights, ids, mask, strict=True):
        d: dict[int, float] = {}
        for w, i, m in zip(row_w.tolist(), row_ids.tolist(), row_m.tolist(), strict=True):
            if not m or i in skip or w <= 0:
                continue
            if w > d.get(i, 0.0):
                d[i] = w
        result.append(d)
    return result


def special_token_ids(tokenizer_path: Path) -> set[int]:
    """Ids of the cls, eos, pad and unk tokens (from special_tokens_map.json when present)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    names: list[str] = []
    stm = tokenizer_path.parent / "special_tokens_map.json"
    if stm.is_file():
        try:
            data = json.loads(stm.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{stm}: unreadable ({exc})") from None
        for key in _SPECIAL_KEYS:
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                names.append(value)
    if not names:
        names = list(_SPECIAL_FALLBACK)
    return {i for i in (tok.token_to_id(n) for n in names) if i is not None}


# -- reading the head ----------------------------------------------------------------


def load_sparse_head(path: Path) -> SparseHead:
    """Read ``weight`` (1, hidden) and ``bias`` (1,) from a safetensors, npz or torch file."""
    weight, bias = read_linear(path, "sparse head")
    if weight.ndim == 2 and weight.shape[0] == 1:
        weight = weight[0]
    if weight.ndim != 1:
        raise ModelError(f"{path}: sparse head weight must be (1, hidden), got {weight.shape}")
    b = 0.0 if bias is None else float(np.asarray(bias, dtype=np.float32).reshape(-1)[0])
    return SparseHead(weight=weight, bias=b)


def read_linear(path: Path, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A Linear layer's ``weight`` (float32) and ``bias`` (None if absent) from a head file."""
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            tensors = read_safetensors(path)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                tensors = {k: z[k] for k in z.files}
        elif path.suffix in (".pt", ".pth", ".bin"):
            tensors = read_torch_state_dict(path)
        else:
            raise ModelError(f"{path}: unknown {what} format (use .safetensors, .npz, .pt)")
    except (
        OSError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        SafetensorError,
    ) as exc:
        raise ModelError(f"{path}: unreadable {what} ({exc})") from None
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if weight is None:
        raise ModelError(f"{path}: no 'weight' tensor in the {what}")
    return np.asarray(weight, dtype=np.float32), None if bias is None else np.asarray(bias)


_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's tensors, read with ``safetensors.numpy``.

    numpy has no bfloat16, so a file holding BF16 tensors is parsed by the library
    (:func:`safetensors.deserialize`) and its BF16 tensors are widened to float32 here.
    """
    import safetensors.numpy as stn

    try:
        return stn.load_file(path)
    except TypeError:  # numpy: "data type 'bfloat16' not understood"
        from safetensors import deserialize

    out = {}
    for name, view in deserialize(path.read_bytes()):
        dtype, data, shape = view["dtype"], view["data"], view["shape"]
        if dtype == "BF16":
            bits = np.frombuffer(data, "<u2").astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(shape)
        elif dtype in _ST_DTYPES:
            out[name] = np.frombuffer(data, _ST_DTYPES[dtype]).reshape(shape)
        else:
            raise ValueError(f"tensor {name} has unsupported dtype {dtype}")
    return out


_TORCH_STORAGES = {
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "DoubleStorage": "<f8",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "BFloat16Storage": "bf16",
}


class _Storage:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: Any, stride: Any, *_: Any
) -> np.ndarray:
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    ).copy()


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict with an allow-list: nothing from the file is executed."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *_: data
        if module == "torch" and name in _TORCH_STORAGES:
            return _Storage(_TORCH_STORAGES[name])
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a model file")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError("unsupported persistent id")
        storage, key = pid[1], str(pid[2])
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("unsupported storage type")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        if storage.dtype == "bf16":
            return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, storage.dtype)


def read_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A ``torch.save`` zip archive of a state dict, as numpy arrays (no torch needed)."""
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        if pkl is None:
            raise ValueError("not a torch zip archive (no data.pkl)")
        prefix = pkl[: -len("data.pkl")]
        import io

        obj = _SafeUnpickler(io.BytesIO(archive.read(pkl)), archive, prefix).load()
    if not isinstance(obj, dict):
        raise ValueError("expected a state dict")
    return {str(k): np.asarray(v) for k, v in obj.items()}
