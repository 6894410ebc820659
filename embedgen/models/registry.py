"""The registry of known models: plain data read from ``registry.json``.

Listing models imports nothing heavy: the registry is a JSON file beside this
module, turned into frozen :class:`RegistryEntry` records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from embedgen.errors import ModelError

REGISTRY_PATH = Path(__file__).resolve().parent / "registry.json"


@dataclass(frozen=True, kw_only=True)
class RegistryEntry:
    """A known model: where it lives on the Hub and how to run it."""

    name: str
    repo: str
    revision: str = "main"
    allow_patterns: tuple[str, ...]
    """Files to fetch (fnmatch patterns over repo paths)."""
    onnx_file: str
    tokenizer_file: str = "tokenizer.json"
    variants: dict[str, str] = field(default_factory=dict)
    """``--variant`` name -> ONNX file that replaces :attr:`onnx_file`."""
    variant_sizes: dict[str, int] = field(default_factory=dict)
    pooling: str = "mean"
    model_output: str | None = None
    """Graph output to use as the sentence vector when the graph has it."""
    normalize: bool = True
    dim: int
    max_tokens: int
    query_prefix: str = ""
    document_prefix: str = ""
    licence: str = ""
    size_bytes: int = 0
    """Approximate download size of the default files."""
    onnx_size_bytes: int = 0
    """Approximate size of the default ONNX file (a variant replaces it)."""
    sparse_head: str | None = None
    """Repo path of a sparse head file (FlagEmbedding's ``sparse_linear.pt``), fetched too."""
    matryoshka_dims: tuple[int, ...] = ()
    description: str = ""
    comment: str = ""

    def onnx_for(self, variant: str | None) -> str:
        """The ONNX file of ``variant`` (None: the default file)."""
        if variant is None:
            return self.onnx_file
        if variant not in self.variants:
            known = ", ".join(sorted(self.variants)) or "none"
            raise ModelError(f"{self.name} has no variant {variant!r} (known: {known})")
        return self.variants[variant]

    def patterns_for(self, variant: str | None) -> tuple[str, ...]:
        """Allow-patterns with the default ONNX file swapped for the variant's."""
        onnx = self.onnx_for(variant)
        pats = [onnx if p == self.onnx_file else p for p in self.allow_patterns]
        if onnx not in pats and not any(_match(onnx, p) for p in pats):
            pats.append(onnx)
        if self.sparse_head and self.sparse_head not in pats:
            pats.append(self.sparse_head)
        return tuple(pats)

    def size_for(self, variant: str | None) -> int:
        """Approximate download size with ``variant``'s ONNX file instead of the default."""
        size = self.variant_sizes.get(variant) if variant else None
        if size is None:
            return self.size_bytes
        return self.size_bytes - self.onnx_size_bytes + size

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryEntry:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ModelError(f"registry entry {data.get('name')!r}: unknown keys {unknown}")
        for key in ("allow_patterns", "matryoshka_dims"):
            if key in known:
                known[key] = tuple(known[key])
        try:
            return cls(**known)
        except TypeError as exc:
            raise ModelError(f"registry entry {data.get('name')!r}: {exc}") from None


def _match(path: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(path, pattern)


@lru_cache(maxsize=4)
def load_registry(path: Path = REGISTRY_PATH) -> dict[str, RegistryEntry]:
    """Known models by name (lower-case), read from the registry data file."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model registry {path} is unreadable ({exc}); reinstall embedgen"
        ) from None
    entries = [RegistryEntry.from_dict(item) for item in data.get("models", [])]
    return {e.name.lower(): e for e in entries}


def lookup(name: str) -> RegistryEntry | None:
    """The registry entry named ``name`` (case-insensitive), or None."""
    return load_registry().get(name.lower())
