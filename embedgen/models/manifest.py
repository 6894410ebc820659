"""``embedgen-model.json``: what a model folder holds and how to run it.

Written by ``embedgen download``; read by the ONNX provider. A folder without a
manifest is read as a sentence-transformers layout (see :mod:`embedgen.models.local`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedgen.errors import ModelError
from embedgen.util.atomic import atomic_write_text

MANIFEST_NAME = "embedgen-model.json"


@dataclass(kw_only=True)
class FileEntry:
    path: str
    """Relative to the model folder, forward slashes."""
    size: int
    sha256: str


@dataclass(kw_only=True)
class Manifest:
    name: str
    onnx_file: str
    """Relative path of the ONNX graph (its external-data files sit beside it)."""
    tokenizer_file: str = "tokenizer.json"
    pooling: str = "mean"
    """``mean``, ``cls`` or ``model`` (use the graph's ``sentence_embedding`` output)."""
    normalize: bool = True
    dim: int | None = None
    max_tokens: int | None = None
    query_prefix: str = ""
    document_prefix: str = ""
    repo: str | None = None
    revision: str | None = None
    """The resolved commit the files came from."""
    variant: str | None = None
    licence: str | None = None
    sparse: bool = False
    """The folder provides a sparse head (``sparse_weights`` output or ``sparse_linear.pt``)."""
    files: list[FileEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        files = [FileEntry(**f) for f in data.get("files", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "files"}
        return cls(files=files, **known)


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest, None when it has none, ModelError when it is unreadable."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest.from_dict(json.loads(path.read_text("utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(
            f"{path}: unreadable model manifest ({exc}); re-download the model"
        ) from None


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a manifest."""
    path = folder / MANIFEST_NAME
    atomic_write_text(path, manifest.to_json())
    return path
