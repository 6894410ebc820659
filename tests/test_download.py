"""embedgen download / models against a loopback server speaking the Hub's protocol."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from hub_server import (
    HubRepo,
    HubServer,
    bge_m3_repo,
    build_onnx,
    build_tokenizer,
    standin_weights,
)
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.models.local import resolve_model, sha256_file
from embedgen.models.manifest import read_manifest

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="session")
def bge_repo(tmp_path_factory: pytest.TempPathFactory) -> HubRepo:
    return bge_m3_repo(tmp_path_factory.mktemp("bge_m3"))


def _st_repo(root: Path, repo_id: str, hidden: int) -> HubRepo:
    """A sentence-transformers layout: onnx/ graphs, tokenizer and configs at the root."""
    vocab = build_tokenizer(root)
    build_onnx(
        root / "onnx", standin_weights(vocab, hidden, seed=1), sparse_output=False, external=False
    )
    build_onnx(
        root / "onnx",
        standin_weights(vocab, hidden, seed=2),
        sparse_output=False,
        external=False,
        name="model_qint8_avx512_vnni.onnx",
    )
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    (root / "model.safetensors").write_bytes(b"\0" * 4096)
    (root / "README.md").write_text("a tiny sentence-transformers model\n")
    return HubRepo.from_folder(repo_id, root)


@pytest.fixture(scope="session")
def st_repo(tmp_path_factory: pytest.TempPathFactory) -> HubRepo:
    return _st_repo(tmp_path_factory.mktemp("tiny_st"), "acme/tiny-st", 32)


@pytest.fixture(scope="session")
def minilm_repo(tmp_path_factory: pytest.TempPathFactory) -> HubRepo:
    return _st_repo(
        tmp_path_factory.mktemp("minilm"), "sentence-transformers/all-MiniLM-L6-v2", 384
    )


@pytest.fixture
def hub(bge_repo, st_repo, minilm_repo, monkeypatch, tmp_path):
    server = HubServer()
    for repo in (bge_repo, st_repo, minilm_repo):
        server.add(repo)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    yield server
    server.stop()


@pytest.fixture
def models(isolated_env: Path) -> Path:
    return isolated_env / "models"


def _resolves(server: HubServer) -> list[str]:
    return [p for m, p in server.requests if "/resolve/" in p]


def test_registry_model_bge_m3(hub: HubServer, bge_repo: HubRepo, models: Path) -> None:
    result = cli("download", "bge-m3")
    assert result.exit_code == 0, result.output
    assert "1024-d" in result.output and "8192 tokens" in result.output
    folder = models / "bge-m3"
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == [
        "embedgen-model.json",
        "onnx/Constant_7_attr__value",
        "onnx/config.json",
        "onnx/model.onnx",
        "onnx/model.onnx_data",
        "onnx/special_tokens_map.json",
        "onnx/tokenizer.json",
        "onnx/tokenizer_config.json",
        "sparse_linear.pt",
    ]
    staged = [p for p in models.glob(".*") if p.name != ".default"]  # .default: conftest's
    assert not staged, "staging folders must not be left behind"
    m = read_manifest(folder)
    assert m is not None
    assert (m.repo, m.revision, m.variant) == ("BAAI/bge-m3", bge_repo.commit, None)
    assert (m.pooling, m.dim, m.max_tokens, m.normalize, m.sparse) == (
        "model",
        1024,
        8192,
        True,
        True,
    )
    assert m.licence == "MIT" and m.extra["sparse_head"] == "sparse_linear.pt"
    for f in m.files:
        assert f.size == len(bge_repo.files[f.path])
        assert f.sha256 == sha256_file(folder / f.path)

    # dense output: the L2-normalised CLS token of the stand-in graph, via the ONNX provider
    from embedgen.config import OnnxConfig
    from embedgen.providers.onnx import OnnxProvider

    spec = resolve_model("bge-m3")
    provider = OnnxProvider(spec, OnnxConfig(device="cpu"))
    vec = provider.embed_texts(["The quick brown fox."])[0]
    ids = provider.tokenizer().encode_for_model("The quick brown fox.")
    w = standin_weights(
        len(json.loads((folder / "onnx/tokenizer.json").read_text())["model"]["vocab"]), 1024
    )
    cls = np.tanh(w["emb"][ids[0]] + w["bias"])
    assert np.allclose(vec, cls / np.linalg.norm(cls), atol=1e-5)


def test_rerun_is_a_noop_without_network(hub: HubServer, models: Path, monkeypatch) -> None:
    assert cli("download", "bge-m3").exit_code == 0
    before = len(hub.requests)
    hub.down = True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("download", "bge-m3")
    assert result.exit_code == 0, result.output
    assert "already in" in result.output and "verified" in result.output
    assert len(hub.requests) == before


def test_force_fetches_every_file_again(hub: HubServer, models: Path) -> None:
    assert cli("download", "bge-m3").exit_code == 0
    first = len(_resolves(hub))
    result = cli("download", "bge-m3", "--force")
    assert result.exit_code == 0, result.output
    assert "downloaded" in result.output
    assert len(_resolves(hub)) == 2 * first


def test_damaged_local_file_is_fetched_again(hub: HubServer, models: Path) -> None:
    assert cli("download", "bge-m3").exit_code == 0
    data = models / "bge-m3" / "onnx" / "model.onnx_data"
    data.write_bytes(data.read_bytes()[:1000])
    result = cli("download", "bge-m3")
    assert result.exit_code == 0, result.output
    assert "onnx/model.onnx_data has 1000 bytes" in result.output
    m = read_manifest(models / "bge-m3")
    entry = next(f for f in m.files if f.path == "onnx/model.onnx_data")
    assert sha256_file(data) == entry.sha256


def test_truncated_download_is_refused(hub: HubServer, models: Path) -> None:
    hub.truncate.add("onnx/model.onnx_data")
    result = cli("download", "bge-m3")
    assert result.exit_code == 1
    assert "truncated" in result.output
    assert not (models / "bge-m3").exists()
    hub.truncate.clear()  # the server recovers: the next run completes
    assert cli("download", "bge-m3").exit_code == 0


@pytest.mark.parametrize("path", ["onnx/model.onnx", "onnx/config.json"])
def test_altered_download_is_refused(hub: HubServer, models: Path, path: str) -> None:
    hub.corrupt.add(path)
    result = cli("download", "bge-m3")
    assert result.exit_code == 1
    assert path in result.output and "altered" in result.output
    assert not (models / "bge-m3").exists()
    assert not (models / ".bge-m3.partial" / path).exists(), "a bad file must not be kept"
    hub.corrupt.clear()
    assert cli("download", "bge-m3").exit_code == 0


@pytest.mark.parametrize("name", ["onnx/../../escape.txt", "onnx/..\\..\\escape.txt"])
def test_path_escaping_name_is_refused(
    hub: HubServer, models: Path, tmp_path: Path, name: str
) -> None:
    hub.extra_names[name] = b"owned"
    result = cli("download", "bge-m3")
    assert result.exit_code == 1
    assert "outside the model folder" in result.output
    assert _resolves(hub) == [], "nothing may be fetched from such a repo"
    assert not list(tmp_path.rglob("escape.txt"))


def test_server_down_names_the_endpoint(hub: HubServer, models: Path) -> None:
    hub.down = True
    result = cli("download", "bge-m3")
    assert result.exit_code == 1
    assert hub.url in result.output and "HF_ENDPOINT" in result.output
    assert "copy a model folder" in result.output


def test_unreachable_endpoint(models: Path, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = cli("download", "bge-m3")
    assert result.exit_code == 1
    assert f"cannot reach the Hub at http://127.0.0.1:{port}" in result.output
    assert "HF_ENDPOINT" in result.output


def test_offline_without_the_model(hub: HubServer, models: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("download", "bge-m3")
    assert result.exit_code == 1
    assert "HF_HUB_OFFLINE" in result.output
    assert hub.requests == []


def test_unlisted_repo_reads_sentence_transformers_files(hub: HubServer, models: Path) -> None:
    result = cli("download", "acme/tiny-st")
    assert result.exit_code == 0, result.output
    m = read_manifest(models / "tiny-st")
    assert (m.onnx_file, m.tokenizer_file, m.pooling, m.max_tokens, m.dim) == (
        "onnx/model.onnx",
        "tokenizer.json",
        "mean",
        128,
        32,
    )
    fetched = {f.path for f in m.files}
    assert "model.safetensors" not in fetched and "README.md" not in fetched
    assert "onnx/model_qint8_avx512_vnni.onnx" not in fetched
    assert "1_Pooling/config.json" in fetched


def test_unlisted_repo_with_options(hub: HubServer, models: Path) -> None:
    result = cli(
        "download",
        "acme/tiny-st",
        "--onnx-file",
        "onnx/model_qint8_avx512_vnni.onnx",
        "--pooling",
        "cls",
        "--name",
        "tiny-q",
        "--query-prefix",
        "q: ",
    )
    assert result.exit_code == 0, result.output
    m = read_manifest(models / "tiny-q")
    assert (m.onnx_file, m.pooling, m.query_prefix) == (
        "onnx/model_qint8_avx512_vnni.onnx",
        "cls",
        "q: ",
    )
    assert "onnx/model.onnx" not in {f.path for f in m.files}


def test_registry_variant(hub: HubServer, models: Path) -> None:
    result = cli("download", "all-minilm-l6-v2", "--variant", "qint8_avx512_vnni")
    assert result.exit_code == 0, result.output
    m = read_manifest(models / "all-minilm-l6-v2")
    assert (m.onnx_file, m.variant, m.dim, m.max_tokens) == (
        "onnx/model_qint8_avx512_vnni.onnx",
        "qint8_avx512_vnni",
        384,
        256,
    )
    assert "onnx/model.onnx" not in {f.path for f in m.files}
    bad = cli("download", "all-minilm-l6-v2", "--variant", "qint4")
    assert bad.exit_code == 1 and "qint8_avx512_vnni" in bad.output


def test_wrong_dim_is_refused(hub: HubServer, models: Path) -> None:
    result = cli("download", "acme/tiny-st", "--dim", "64")
    assert result.exit_code == 1
    assert "32-d vectors, expected 64" in result.output


def test_revisions_and_missing_repos(hub: HubServer, bge_repo: HubRepo, models: Path) -> None:
    assert cli("download", "bge-m3", "--revision", bge_repo.commit).exit_code == 0
    bad = cli("download", "bge-m3", "--revision", "v9", "--force")
    assert bad.exit_code == 1 and "revision 'v9'" in bad.output
    missing = cli("download", "acme/missing")
    assert missing.exit_code == 1 and "acme/missing not found" in missing.output
    assert cli("download", "not a model").exit_code == 2


def test_hf_token_is_sent_and_never_shown(hub: HubServer, models: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123")
    result = cli("download", "acme/tiny-st")
    assert result.exit_code == 0, result.output
    assert "Bearer hf_secret_token_123" in hub.auth_headers
    assert "hf_secret_token_123" not in result.output
    assert "hf_secret_token_123" not in (models / "tiny-st" / "embedgen-model.json").read_text()


def test_a_foreign_folder_is_not_replaced(hub: HubServer, models: Path) -> None:
    (models / "bge-m3").mkdir()
    (models / "bge-m3" / "mine.txt").write_text("keep me")
    result = cli("download", "bge-m3")
    assert result.exit_code == 1 and "--force" in result.output
    assert (models / "bge-m3" / "mine.txt").read_text() == "keep me"


def test_models_lists_registry_and_downloads(hub: HubServer, models: Path) -> None:
    rows = json.loads(cli("models", "--json").output)
    names = [r["name"] for r in rows]
    assert names[:6] == [
        "default",
        "bge-m3",
        "all-minilm-l6-v2",
        "bge-small-en-v1.5",
        "multilingual-e5-small",
        "nomic-embed-text-v1.5",
    ]
    assert not any(r["downloaded"] for r in rows if r["name"] != "default")  # always there
    assert cli("download", "bge-m3").exit_code == 0
    assert cli("download", "acme/tiny-st").exit_code == 0
    rows = {r["name"]: r for r in json.loads(cli("models", "--json").output)}
    assert rows["bge-m3"]["downloaded"] and rows["bge-m3"]["dim"] == 1024
    assert rows["tiny-st"]["downloaded"] and rows["tiny-st"]["repo"] == "acme/tiny-st"
    table = cli("models")
    assert table.exit_code == 0
    assert "bge-m3" in table.output and "yes" in table.output and "8192" in table.output


def test_downloaded_model_embeds_with_run(hub: HubServer, models: Path, tmp_path: Path) -> None:
    """Acceptance: a downloaded model is usable by name in ``embedgen run``."""
    assert cli("download", "bge-m3").exit_code == 0
    src = tmp_path / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"text": t}) + "\n"
            for t in ["The quick brown fox.", "Embeddings turn text into vectors."]
        )
    )
    out = tmp_path / "out.parquet"
    result = cli("run", str(src), "--model", "bge-m3", "-o", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.schema.field("embedding").type.list_size == 1024
    vecs = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_installed_command_reads_hf_endpoint_at_run_time(hub: HubServer, models: Path) -> None:
    """``python -m embedgen`` in a fresh process: HF_ENDPOINT from the environment, exit codes."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    cmd = [sys.executable, "-m", "embedgen", "download", "acme/tiny-st"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "tiny-st: downloaded" in ok.stdout
    hub.down = True
    bad = subprocess.run([*cmd, "--force"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert f"cannot reach the Hub at {hub.url}" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert read_manifest(models / "tiny-st") is not None, "a failed --force keeps the model"


def _shown_names(output: str) -> set[str]:
    return {w for line in output.splitlines() for w in line.replace("│", " ").split()}


@pytest.mark.parametrize("columns", ["80", "60"])
def test_models_table_never_truncates_a_name(hub: HubServer, models: Path, columns: str) -> None:
    """A name a user must type shows whole in an 80-column terminal (and narrower)."""
    long_name = "tiny-st-with-a-rather-long-custom-name"
    assert cli("download", "acme/tiny-st", "--name", long_name).exit_code == 0
    result = runner.invoke(app, ["models"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    names = [r["name"] for r in json.loads(cli("models", "--json").output)]
    assert long_name in names
    assert set(names) <= _shown_names(result.output), result.output


def test_models_table_piped(models: Path, tmp_path: Path) -> None:
    """Piped into another program (not a terminal, no COLUMNS): names whole."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run(
        [sys.executable, "-m", "embedgen", "models"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout
    from embedgen.models.registry import load_registry

    assert set(load_registry()) <= _shown_names(out.stdout), out.stdout


# -- a Hub or mirror that lists no sha256 or size (issue 14, defect 11) -------------------


def test_unverifiable_download_warns(hub: HubServer, models: Path) -> None:
    hub.unverified = True
    result = cli("download", "acme/tiny-st")
    assert result.exit_code == 0, result.output
    warning = next(ln for ln in result.output.splitlines() if ln.startswith("warning:"))
    assert "could not be verified" in warning and "onnx/model.onnx" in result.output
    m = read_manifest(models / "tiny-st")
    assert m is not None and "onnx/model.onnx" in m.extra["unverified"]


def test_require_verified_refuses_an_unverifiable_download(hub: HubServer, models: Path) -> None:
    hub.unverified = True
    result = cli("download", "acme/tiny-st", "--require-verified")
    assert result.exit_code == 1, result.output
    assert "--require-verified" in result.output and "sha256" in result.output
    assert not _resolves(hub), "nothing is fetched that cannot be verified"
    assert not (models / "tiny-st").exists()


def test_require_verified_accepts_a_verified_download(hub: HubServer, models: Path) -> None:
    result = cli("download", "acme/tiny-st", "--require-verified")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    m = read_manifest(models / "tiny-st")
    assert m is not None and not m.extra.get("unverified")


def test_require_verified_refuses_a_folder_fetched_unverified(hub: HubServer, models: Path) -> None:
    hub.unverified = True
    assert cli("download", "acme/tiny-st").exit_code == 0
    hub.unverified = False
    result = cli("download", "acme/tiny-st", "--require-verified")
    assert result.exit_code == 1, result.output
    assert "--force" in result.output
    result = cli("download", "acme/tiny-st", "--require-verified", "--force")
    assert result.exit_code == 0, result.output
    m = read_manifest(models / "tiny-st")
    assert m is not None and not m.extra.get("unverified")


def test_a_missing_repo_on_a_plain_mirror_is_not_found_not_unreachable(
    hub: HubServer, models: Path
) -> None:
    """A 404 without the Hub's error headers said "cannot reach the Hub" (#24)."""
    hub.bare_errors = True
    result = cli("download", "acme/missing")
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "acme/missing not found" in flat and "cannot reach" not in flat


def test_models_lists_the_default_every_run_uses(models: Path) -> None:
    """`embedgen models` did not list the embedded default (#24)."""
    result = cli("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    default = rows["default"]
    assert default["downloaded"] and default["repo"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (default["dim"], default["max_tokens"]) == (384, 256)
    assert 20 * 2**20 < default["size_bytes"] < 25 * 2**20  # the shipped int8 file
