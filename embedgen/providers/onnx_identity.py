"""What identifies a local ONNX model's vectors: the fingerprint its cache entries are keyed by."""

from __future__ import annotations

from embedgen.models.local import KEY_NAMES, ModelSpec, identity_sha256, sha256_file


def model_fingerprint(
    spec: ModelSpec,
    *,
    pooling: str,
    normalize: bool,
    dimensions: int | None,
    prefix: str,
    max_tokens: int,
    dtype: str,
    per_text: bool = False,
) -> str:
    """Everything that changes a vector of a local model, as one line.

    ``per_text``: each text runs alone (a model that quantizes its activations per call
    gives other vectors that way than in shared batches, so their cache entries differ).

    A plain folder (no manifest) is its content and settings only: its name is where it
    lies, so renaming or copying it keeps its cache entries. A downloaded model or the
    default keeps the name its manifest gives it, as its entries were always keyed.
    """
    sha = spec.sha256 or _file_identity(spec)
    tokenizer = sha256_file(spec.tokenizer_path)
    named = f"model={KEY_NAMES.get(spec.name, spec.name)}|" if spec.sha256 else ""
    return (
        f"onnx|{named}sha256={sha}|tokenizer={tokenizer}"
        f"|pooling={pooling}|normalize={normalize}"
        f"|dimensions={dimensions}|prefix={prefix!r}|max_tokens={max_tokens}|dtype={dtype}"
        + ("|per_text=True" if per_text else "")
    )


def _file_identity(spec: ModelSpec) -> str:
    """sha256 of the ONNX file, plus size of external-data files beside it.

    Hidden files (``.gitattributes``, ``.DS_Store``) and docs never change a vector.
    """
    digest = identity_sha256(spec.onnx_path)
    extra = sorted(
        f"{p.name}:{p.stat().st_size}"
        for p in spec.onnx_path.parent.iterdir()
        if p.is_file()
        and p != spec.onnx_path
        and not p.name.startswith(".")
        and not p.name.endswith((".json", ".txt", ".md"))
        and ("data" in p.name or p.suffix in ("", ".bin"))
    )
    return digest + ("+" + ",".join(extra) if extra else "")
