"""The registry of known models: plain data, loaded without heavy imports."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedgen.errors import ModelError, UsageError
from embedgen.models.plan import plan_for
from embedgen.models.registry import REGISTRY_PATH, RegistryEntry, load_registry, lookup

EXPECTED = {
    # name: (repo, pooling, dim, max tokens, query prefix, document prefix)
    "bge-m3": ("BAAI/bge-m3", "cls", 1024, 8192, "", ""),
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "mean", 384, 256, "", ""),
    "bge-small-en-v1.5": (
        "BAAI/bge-small-en-v1.5",
        "cls",
        384,
        512,
        "Represent this sentence for searching relevant passages: ",
        "",
    ),
    "multilingual-e5-small": (
        "intfloat/multilingual-e5-small",
        "mean",
        384,
        512,
        "query: ",
        "passage: ",
    ),
    "nomic-embed-text-v1.5": (
        "nomic-ai/nomic-embed-text-v1.5",
        "mean",
        768,
        8192,
        "search_query: ",
        "search_document: ",
    ),
}


def test_known_models() -> None:
    reg = load_registry()
    assert list(reg) == list(EXPECTED)
    for name, (repo, pooling, dim, max_tokens, qp, dp) in EXPECTED.items():
        e = reg[name]
        assert (e.repo, e.pooling, e.dim, e.max_tokens, e.query_prefix, e.document_prefix) == (
            repo,
            pooling,
            dim,
            max_tokens,
            qp,
            dp,
        )
        assert e.licence and e.size_bytes > 0 and e.comment
        for variant in (None, *e.variants):
            pats = e.patterns_for(variant)
            for required in (e.onnx_for(variant), e.tokenizer_file):
                assert any(fnmatch.fnmatchcase(required, p) for p in pats), (
                    name,
                    variant,
                    required,
                )
            assert 0 < e.size_for(variant) <= e.size_bytes or variant is None
    assert reg["bge-m3"].allow_patterns == ("onnx/*",)
    assert reg["bge-m3"].model_output == "sentence_embedding"
    assert reg["nomic-embed-text-v1.5"].matryoshka_dims == (64, 128, 256, 512, 768)
    assert "qint8_avx512_vnni" in reg["all-minilm-l6-v2"].variants


def test_variant_swaps_the_onnx_file() -> None:
    e = lookup("All-MiniLM-L6-v2")
    assert e is not None
    pats = e.patterns_for("qint8_avx512_vnni")
    assert "onnx/model_qint8_avx512_vnni.onnx" in pats and "onnx/model.onnx" not in pats
    assert e.size_for("qint8_avx512_vnni") < e.size_for(None)
    with pytest.raises(ModelError, match="no variant 'fp8'"):
        e.onnx_for("fp8")


def test_plans() -> None:
    p = plan_for("bge-m3")
    assert (p.repo, p.revision, p.onnx_file, p.tokenizer_file) == (
        "BAAI/bge-m3",
        "main",
        "onnx/model.onnx",
        "onnx/tokenizer.json",
    )
    assert "sparse_linear.pt" in (p.patterns or ())
    assert plan_for("BAAI/bge-m3").name == "bge-m3"  # the repo id finds the registry entry
    q = plan_for("acme/Some-Model", pooling="cls")
    assert (q.name, q.patterns, q.pooling) == ("some-model", None, "cls")
    for bad in ("nope", "a/b/c", "../x"):
        with pytest.raises(UsageError):
            plan_for(bad)
    with pytest.raises(UsageError):
        plan_for("acme/x", pooling="max")
    with pytest.raises(ModelError, match="outside the model folder"):
        plan_for("acme/x", onnx_file="../model.onnx")


def test_bad_registry_data(tmp_path: Path) -> None:
    data = json.loads(REGISTRY_PATH.read_text())
    data["models"][0]["colour"] = "blue"
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="unknown keys"):
        load_registry(path)
    path.write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_registry(path)
    with pytest.raises(ModelError, match="bge-m3"):
        RegistryEntry.from_dict({"name": "bge-m3", "repo": "x/y"})


def test_listing_models_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from embedgen.cli.download_cmd import list_models\n"
        f"rows = list_models(__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "assert len(rows) == 6  # the registry and the embedded default\n"
        "heavy = ['onnxruntime', 'huggingface_hub', 'httpx', 'numpy', 'tokenizers', 'lmdb']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_models_imports_nothing_above_it() -> None:
    """models/ sits below providers/ (issue 10): no import of providers, router or pipeline."""
    import embedgen.models

    folder = Path(embedgen.models.__file__).parent
    above = ("embedgen.providers", "embedgen.router", "embedgen.pipeline", "embedgen.budget")
    bad = {
        f"{p.name}: {m}"
        for p in sorted(folder.glob("*.py"))
        for m in _imported_modules(p)
        if m.startswith(above)
    }
    assert not bad, sorted(bad)
