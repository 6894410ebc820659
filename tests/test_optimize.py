"""embedgen optimize and the embedded default's int8 variant, on real ONNX models.

Two models: a tiny two-layer graph written here (fast: the search runs every candidate
in seconds) and the embedded default all-MiniLM-L6-v2 (slow tests: the real thing).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from hub_server import HubRepo, HubServer, build_tokenizer
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.models.local import resolve_model, sha256_file
from embedgen.models.manifest import read_manifest

runner = CliRunner()
FLOOR = ("--min-cos", "0.9999", "--min-worst", "0.9999")
"""A floor the tiny model meets only once its outlier channels are smoothed."""


def cli(*args: str):
    return runner.invoke(app, list(args))


def tiny_model(folder: Path, hidden: int = 32, seed: int = 3) -> Path:
    """An ST-style folder: embeddings with two outlier channels, a residual MLP, mean pooling."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vocab = build_tokenizer(folder)
    rng = np.random.default_rng(seed)
    emb = rng.normal(0, 1, (vocab, hidden)).astype(np.float32)
    emb[:, :2] *= 25.0  # outlier channels, as transformers have
    w1 = rng.normal(0, 0.2, (hidden, 2 * hidden)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (2 * hidden, hidden)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((emb, "emb"), (w1, "w1"), (w2, "w2"))]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h0"], name="embed"),
        helper.make_node("MatMul", ["h0", "w1"], ["a"], name="layer.0/intermediate/MatMul"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="layer.0/output/MatMul"),
        helper.make_node("Add", ["o", "h0"], ["last_hidden_state"], name="residual"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", hidden])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(folder / "model.onnx"))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": 1}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "tiny")


def _optimize_json(*args: str) -> tuple[int, dict]:
    result = cli("optimize", *args, "--json")
    start = result.stdout.find("{")
    assert start >= 0, result.output
    return result.exit_code, json.loads(result.stdout[start:])


def test_optimize_tiny_model_meets_floor_and_writes_a_runnable_folder(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tiny-int8"
    code, report = _optimize_json(str(tiny), "-o", str(out), "--limit", "60", *FLOOR)
    assert code == 0, report
    chosen = report["chosen"]
    assert chosen["meets_floor"] and chosen["fidelity"]["mean"] >= 0.9999
    assert chosen["fidelity"]["min"] >= 0.9999
    assert report["floor"] == {"mean_cos": 0.9999, "min_cos": 0.9999}
    assert {"mean", "min", "p1", "top10"} <= set(chosen["fidelity"])
    assert chosen["settings"]["per_channel"] is True
    assert chosen["settings"]["graph_optimization"] in ("all", "basic")
    assert report["sample"] == {"source": "built-in", "texts": 60}
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.extra["optimize"]["sha256"] == report["sha256"]
    assert sha256_file(out / "model.onnx") == report["sha256"]
    assert manifest.extra["graph_optimization"] == chosen["settings"]["graph_optimization"]
    onnx_entry = next(f for f in manifest.files if f.path == "model.onnx")
    assert onnx_entry.sha256 == report["sha256"]

    from embedgen.config import OnnxConfig
    from embedgen.providers.onnx import OnnxProvider

    variant, original = resolve_model(str(out)), resolve_model(str(tiny))
    assert variant.graph_optimization == chosen["settings"]["graph_optimization"]
    cfg = OnnxConfig(device="cpu", warmup_batches=0)
    a, b = OnnxProvider(variant, cfg), OnnxProvider(original, cfg)
    assert a.info.fingerprint != b.info.fingerprint  # the cache keys the variant apart
    texts = ["a model folder holds an ONNX graph", "the quick brown fox"]
    cos = (a.embed_texts(texts) * b.embed_texts(texts)).sum(axis=1)
    assert cos.min() > 0.95


def test_optimize_prints_a_table(tiny: Path, tmp_path: Path) -> None:
    result = cli("optimize", str(tiny), "-o", str(tmp_path / "t"), "--limit", "30", *FLOOR)
    assert result.exit_code == 0, result.output
    assert "mean cos" in result.output and "top-10" in result.output and "kept" in result.output
    assert f"embedgen run CORPUS --model {tmp_path / 't'}" in result.output


def test_optimize_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    shas = []
    for name in ("one", "two"):
        code, report = _optimize_json(str(tiny), "-o", str(tmp_path / name), "--limit", "40",
                                      *FLOOR)  # fmt: skip
        assert code == 0, report
        shas.append(report["sha256"])
    assert shas[0] == shas[1]
    assert (tmp_path / "one" / "model.onnx").read_bytes() == (
        tmp_path / "two" / "model.onnx"
    ).read_bytes()


def test_unreachable_floor_is_a_clean_exit_1_naming_the_best(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    result = cli("optimize", str(tiny), "-o", str(out), "--limit", "40",
                 "--min-cos", "1", "--min-worst", "1")  # fmt: skip
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "no variant met the floor" in result.output
    assert "the best reached mean 0.9999" in result.output
    assert not out.exists()
    assert not list(tmp_path.glob(".never*")), "no half-written folder is left"
    code, report = _optimize_json(str(tiny), "-o", str(out), "--limit", "40", "--min-cos", "1",
                                  "--min-worst", "1")  # fmt: skip
    assert code == 1
    assert report["chosen"] is None and report["best"]["fidelity"]["mean"] < 1
    labels = [c["label"] for c in report["candidates"]]
    assert labels[0] == "int8" and any("smooth" in x for x in labels)
    assert any("fp32" in x for x in labels), "the search kept sensitive MatMuls in fp32"


def test_optimize_on_own_sample_and_bad_options(tiny: Path, tmp_path: Path, write_parquet) -> None:
    body = [f"text number {i} about rivers and bridges" for i in range(30)]
    corpus = write_parquet({"body": body})
    code, report = _optimize_json(str(tiny), "-o", str(tmp_path / "v"), "--sample", str(corpus),
                                  "--text-column", "body", *FLOOR)  # fmt: skip
    assert code == 0, report
    assert report["sample"] == {"source": str(corpus), "texts": 30}
    missing = cli("optimize", str(tiny), "--sample", str(corpus), "--text-column", "nope")
    assert missing.exit_code == 2 and "nope" in missing.output
    bad = cli("optimize", str(tiny), "--min-cos", "1.5")
    assert bad.exit_code == 2


def test_optimize_refuses_a_quantized_model(tiny: Path, tmp_path: Path) -> None:
    code, report = _optimize_json(str(tiny), "-o", str(tmp_path / "v1"), "--limit", "20",
                                  "--min-cos", "0.9", "--min-worst", "0.5")  # fmt: skip
    assert code == 0
    again = cli("optimize", str(tmp_path / "v1"), "-o", str(tmp_path / "v2"))
    assert again.exit_code == 1 and "already quantized" in again.output


def test_download_optimize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tiny_model(tmp_path / "repo")
    server = HubServer()
    server.add(HubRepo.from_folder("acme/tiny-mlp", folder))
    server.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        result = cli("download", "acme/tiny-mlp", "--name", "tiny-mlp", "--optimize")
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    models = Path(__import__("os").environ["EMBEDGEN_MODELS_DIR"])
    manifest = read_manifest(models / "tiny-mlp-int8")
    assert manifest is not None and "optimize" in manifest.extra
    assert resolve_model("tiny-mlp-int8").sha256 == manifest.extra["optimize"]["sha256"]


# --- graph simplifications ---------------------------------------------------------------


def _attention_graph():
    """GELU (torch's erf form) and a softmax with an infinite key mask and a NaN guard."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: float):
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.float32))
        )

    nodes = [
        const("sqrt2", 2**0.5), const("one", 1.0), const("half", 0.5),
        const("zero", 0.0), const("minus_inf", -np.inf),
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["p"]),
        helper.make_node("Mul", ["half", "p"], ["h"]),
        helper.make_node("Mul", ["x", "h"], ["g"]),
        helper.make_node("Where", ["keep", "zero", "minus_inf"], ["bias"]),
        helper.make_node("Add", ["g", "bias"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("IsNaN", ["probs"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "probs"], ["guarded"]),
        helper.make_node("Identity", ["guarded"], ["y"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("keep", TensorProto.BOOL, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_simplify_fuses_gelu_and_drops_the_nan_guard_without_changing_outputs() -> None:
    import onnxruntime as ort

    from embedgen.models.variants import simplify

    model = _attention_graph()
    simple = simplify(model)
    ops = [n.op_type for n in simple.graph.node]
    assert "IsNaN" not in ops and "Erf" not in ops and ops.count("Gelu") == 1
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    keep = np.array([[1, 1, 0, 0], [1, 0, 1, 1]], dtype=bool)  # every row keeps a key
    runs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x, "keep": keep}
        )[0]
        for m in (model, simple)
    ]
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)
    assert simplify(simple).SerializeToString() == simple.SerializeToString()


# --- the embedded default ---------------------------------------------------------------


def test_default_variant_is_built_once_and_rebuilt_when_altered(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from embedgen.models.default_variant import RECORD_NAME
    from embedgen.models.local import DEFAULT_SHA256

    shutil.rmtree(isolated_env / "models" / ".default")  # conftest links a prebuilt one
    caplog.set_level(logging.INFO, logger="embedgen")
    spec = resolve_model(None)
    assert "preparing the default model's int8 variant" in caplog.text
    assert spec.onnx_path.is_relative_to(isolated_env / "models")
    assert spec.sha256 == sha256_file(spec.onnx_path) != DEFAULT_SHA256
    assert spec.graph_optimization == "basic"
    record = json.loads((spec.onnx_path.parent / RECORD_NAME).read_text())
    assert record["sha256"] == spec.sha256 and record["source_sha256"] == DEFAULT_SHA256
    built = spec.onnx_path.stat().st_mtime_ns

    caplog.clear()
    assert resolve_model("default").sha256 == spec.sha256
    assert spec.onnx_path.stat().st_mtime_ns == built and "variant" not in caplog.text

    with spec.onnx_path.open("ab") as f:  # an altered file: its sha256 no longer matches
        f.write(b"\0")
    again = resolve_model(None)
    assert "rebuilding" in caplog.text
    assert again.sha256 == spec.sha256 == sha256_file(again.onnx_path)

    original = resolve_model("default-original")
    assert original.sha256 == DEFAULT_SHA256 and original.onnx_path != again.onnx_path


def test_an_unchanged_default_variant_is_not_hashed_again(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedgen.models import local

    spec = resolve_model(None)
    calls: list[Path] = []
    original = local.sha256_file

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        calls.append(path)
        return original(path, chunk)

    monkeypatch.setattr(local, "sha256_file", counting)
    assert resolve_model(None).sha256 == spec.sha256 and calls == []  # known by its stat
    copy = spec.onnx_path.with_name("copy.onnx")  # same bytes, another inode (conftest links)
    shutil.copyfile(spec.onnx_path, copy)
    copy.replace(spec.onnx_path)  # read once, then known again
    assert resolve_model(None).sha256 == spec.sha256 and calls == [spec.onnx_path]
    assert resolve_model(None).sha256 == spec.sha256 and len(calls) == 1


def test_default_and_original_have_different_cache_fingerprints() -> None:
    from embedgen.config import OnnxConfig
    from embedgen.providers.onnx import OnnxProvider

    cfg = OnnxConfig(device="cpu", warmup_batches=0)
    variant = OnnxProvider(resolve_model(None), cfg)
    original = OnnxProvider(resolve_model("default-original"), cfg)
    assert variant.info.fingerprint != original.info.fingerprint
    texts = ["The train to Lyon leaves at 7:42.", "Photosynthesis converts light into sugar."]
    cos = (variant.embed_texts(texts) * original.embed_texts(texts)).sum(axis=1)
    assert cos.min() > 0.98


@pytest.mark.slow
def test_optimize_default_meets_floor_and_is_deterministic(tmp_path: Path) -> None:
    shas = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, report = _optimize_json("default", "-o", str(out), "--limit", "64")
        assert code == 0, report
        fid = report["chosen"]["fidelity"]
        assert fid["mean"] >= 0.995 and fid["min"] >= 0.98
        assert report["chosen"]["speedup"] > 1.0
        shas.append(sha256_file(out / "model.onnx"))
    assert shas[0] == shas[1]


def _two_matmuls():
    """x -> MatMul(W1) -> Relu -> MatMul(W2): two quantizable weight MatMuls, batch axis free."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.normal(size=(16, 32)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [w1, w2],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("activations", ["static", "dynamic"])
def test_static_activations_make_a_row_independent_of_its_batch(
    tmp_path: Path, activations: str
) -> None:
    import onnx
    import onnxruntime as ort

    from embedgen.models.variants import QuantSettings, build_variant

    rng = np.random.default_rng(2)
    calibration = [{"x": rng.normal(size=(8, 16)).astype(np.float32)} for _ in range(4)]
    out = tmp_path / "q.onnx"
    settings = QuantSettings(activations=activations)
    build_variant(_two_matmuls(), out, settings, calibration=calibration)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("DynamicQuantizeLinear" in ops or "DynamicQuantizeMatMul" in ops) == (
        activations == "dynamic"
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    row = rng.normal(size=(1, 16)).astype(np.float32)
    alone = session.run(None, {"x": row})[0][0]
    loud = np.vstack([row, 50 * rng.normal(size=(5, 16)).astype(np.float32)])  # large neighbours
    beside = session.run(None, {"x": loud})[0][0]
    assert np.array_equal(alone, beside) == (activations == "static")
    assert "static activations" in settings.describe() or activations == "dynamic"


def test_static_activations_need_calibration(tmp_path: Path) -> None:
    from embedgen.models.variants import QuantSettings, build_variant

    with pytest.raises(ValueError, match="calibration"):
        build_variant(_two_matmuls(), tmp_path / "q.onnx", QuantSettings(activations="static"))
