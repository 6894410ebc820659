"""Write a kept variant as a model folder that ``embedgen run --model FOLDER`` reads.

The folder holds ``model.onnx``, the tokenizer (with the files beside it that
tokenizers read), ``1_Pooling/config.json`` and ``sentence_bert_config.json`` for
other tools, and an ``embedgen-model.json`` manifest: every file's size and sha256,
the source model, the settings and the fidelity report (under ``extra.optimize``),
and the onnxruntime optimisation level that ran it fastest
(``extra.graph_optimization``). It is assembled in a temporary folder beside the
target and renamed into place, so a failed run leaves no half-written model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from embedgen.errors import InputError
from embedgen.models.local import ModelSpec, sha256_file
from embedgen.models.manifest import MANIFEST_NAME, FileEntry, Manifest, write_manifest

TOKENIZER_SIBLINGS = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def write_folder(
    out: Path,
    *,
    spec: ModelSpec,
    onnx_file: Path,
    name: str,
    report: dict[str, Any],
    graph_optimization: str,
    force: bool = True,
) -> Manifest:
    """Assemble the model folder at ``out`` (replacing an earlier variant there)."""
    if out.exists() and not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not an embedgen model folder; choose another -o")
    if out.exists() and not force:
        raise InputError(f"{out} exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        shutil.copyfile(onnx_file, tmp / "model.onnx")
        shutil.copyfile(spec.tokenizer_path, tmp / "tokenizer.json")
        for sibling in TOKENIZER_SIBLINGS:
            src = spec.tokenizer_path.parent / sibling
            if src.is_file():
                shutil.copyfile(src, tmp / sibling)
        (tmp / "1_Pooling").mkdir()
        pooling = {
            "word_embedding_dimension": report.get("dim"),
            "pooling_mode_cls_token": spec.pooling == "cls",
            "pooling_mode_mean_tokens": spec.pooling == "mean",
        }
        (tmp / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
        sbert = {"max_seq_length": spec.max_tokens, "do_lower_case": False}
        (tmp / "sentence_bert_config.json").write_text(json.dumps(sbert, indent=2) + "\n")
        files = [
            FileEntry(path=p.relative_to(tmp).as_posix(), size=p.stat().st_size,
                      sha256=sha256_file(p))
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        ]  # fmt: skip
        manifest = Manifest(
            name=name,
            onnx_file="model.onnx",
            pooling=spec.pooling,
            normalize=spec.normalize,
            dim=report.get("dim"),
            max_tokens=spec.max_tokens,
            query_prefix=spec.query_prefix,
            document_prefix=spec.document_prefix,
            variant="int8",
            files=files,
            extra={"optimize": report, "graph_optimization": graph_optimization},
        )
        write_manifest(tmp, manifest)
        if out.exists():
            old = out.parent / f".{out.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
