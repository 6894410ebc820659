"""Facts about a downloaded ONNX model: its output names and its sparse head file.

:func:`graph_outputs` reads the output names straight from the protobuf (skipping
the weights), so no onnxruntime session is built just to look. Loading the model to
embed a test sentence is done above this package (:mod:`embedgen.providers.smoke`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import BinaryIO

from embedgen.errors import ModelError

SPARSE_OUTPUT = "sparse_weights"
"""The graph output that holds BGE-M3's per-token sparse weights, when exported."""
HEAD_NAMES = ("sparse_linear.safetensors", "sparse_linear.npz", "sparse_linear.pt")
"""BGE-M3's sparse head (``sparse_linear``) as FlagEmbedding and exporters ship it."""
COLBERT_NAMES = ("colbert_linear.safetensors", "colbert_linear.npz", "colbert_linear.pt")
"""BGE-M3's multi-vector head (``colbert_linear``: Linear(hidden, dim))."""
_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_OUTPUT = 12  # GraphProto.output
_VALUE_INFO_NAME = 1  # ValueInfoProto.name
_GRAPH_NODE = 1  # GraphProto.node
_NODE_OP_TYPE = 4  # NodeProto.op_type


def _varint(f: BinaryIO) -> int | None:
    shift = result = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
    raise ValueError("bad varint")


def _fields(f: BinaryIO, end: int) -> list[tuple[int, int, int]]:
    """(field number, start offset, length) of the length-delimited fields up to ``end``."""
    out = []
    while f.tell() < end:
        key = _varint(f)
        if key is None:
            break
        number, wire = key >> 3, key & 7
        if wire == 0:
            _varint(f)
        elif wire == 1:
            f.seek(8, 1)
        elif wire == 5:
            f.seek(4, 1)
        elif wire == 2:
            length = _varint(f)
            if length is None:
                raise ValueError("truncated field")
            out.append((number, f.tell(), length))
            f.seek(length, 1)
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _graph_strings(path: Path, item: int, field: int) -> list[str]:
    """String ``field`` of every ``item`` of the graph (e.g. each output's name), read from
    the ONNX protobuf without loading weights."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            found = []
            for number, start, length in _fields(f, size):
                if number != _MODEL_GRAPH:
                    continue
                f.seek(start)
                for gnum, gstart, glen in _fields(f, start + length):
                    if gnum != item:
                        continue
                    f.seek(gstart)
                    for inum, istart, ilen in _fields(f, gstart + glen):
                        if inum == field:
                            f.seek(istart)
                            found.append(f.read(ilen).decode("utf-8"))
                    f.seek(gstart + glen)
            return found
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a readable ONNX file ({exc})") from None


def graph_outputs(path: Path) -> list[str]:
    """Names of the graph's outputs."""
    return _graph_strings(path, _GRAPH_OUTPUT, _VALUE_INFO_NAME)


def graph_op_types(path: Path) -> set[str]:
    """The operator types of the graph's nodes."""
    return set(_graph_strings(path, _GRAPH_NODE, _NODE_OP_TYPE))


def quantizes_per_call(path: Path) -> bool:
    """Whether the model quantizes its activations when it runs (``DynamicQuantizeLinear``
    and its fused forms): their scale is taken over the whole call, so a text's vector then
    depends on the other texts of its batch unless each text runs alone.

    Read once per version of the file: a run asks when it plans its session early and again
    when it builds its provider.
    """
    try:
        stat = path.stat()
        version: tuple[int, int] | None = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = None  # the read says what is wrong with it
    return _quantizes_per_call(path, version)


@functools.lru_cache(maxsize=32)
def _quantizes_per_call(path: Path, version: tuple[int, int] | None) -> bool:
    return any(op.startswith("DynamicQuantize") for op in graph_op_types(path))


def find_sparse_head(
    folder: Path, onnx_path: Path | None = None, names: tuple[str, ...] = HEAD_NAMES
) -> Path | None:
    """The sparse head file (or another head: ``names``) in a model folder, or beside its
    ONNX file, if any."""
    for base in (folder, onnx_path.parent if onnx_path else folder):
        for name in names:
            if (base / name).is_file():
                return base / name
    return None
