"""Nightly re-runs: unchanged documents are not tokenized again, the model is not loaded
when nothing needs embedding, and the output is still complete and equal to a fresh run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embedgen
from embedgen.providers.hf_tokenizer import HFTokenizer

ORIGINAL = "default-original"
"""The shipped int8 file computes in fp32, so a vector does not depend on its batch: a
re-run's rows can be compared with a fresh run's to the last digit."""

LONG = " ".join(f"word{i} of a longer document that needs several chunks" for i in range(60))


def _corpus(path: Path, texts: list[str]) -> Path:
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), path)
    return path


def _texts(n: int) -> list[str]:
    return [f"document {i} is about topic {i % 7}" if i % 10 else f"{i}: {LONG}" for i in range(n)]


def _count_tokenized(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    original = HFTokenizer.encode_offsets

    def counting(self: HFTokenizer, texts):  # type: ignore[no-untyped-def]
        seen.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(HFTokenizer, "encode_offsets", counting)
    return seen


def _rows(path: Path) -> tuple[pa.Table, np.ndarray]:
    table = pq.read_table(path)
    vecs = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    return table.drop(["embedding"]), vecs


def test_changed_documents_only_are_tokenized_and_rows_equal_a_fresh_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(200)
    src = _corpus(tmp_path / "c.parquet", texts)
    opts = {"quiet": True, "id_column": "id", "max_tokens": 32, "overlap": 4, "model": ORIGINAL}
    embedgen.embed_corpus(src, tmp_path / "first.parquet", **opts)
    changed = list(texts)
    for i in range(0, 200, 20):  # 5% of the documents change
        changed[i] = changed[i] + " (edited)"
    _corpus(src, changed)
    seen = _count_tokenized(monkeypatch)
    summary = embedgen.embed_corpus(src, tmp_path / "again.parquet", **opts)
    assert sum(seen) == 10, seen  # only the ten edited documents
    assert summary.computed > 0 and summary.cached > 0
    monkeypatch.undo()
    fresh = embedgen.embed_corpus(src, tmp_path / "fresh.parquet", use_cache=False, **opts)
    assert fresh.chunks == summary.chunks
    meta_a, vec_a = _rows(tmp_path / "again.parquet")
    meta_f, vec_f = _rows(tmp_path / "fresh.parquet")
    assert meta_a.equals(meta_f)
    cos = (vec_a * vec_f).sum(axis=1)
    assert cos.min() > 0.99999


def test_a_fully_cached_rerun_never_loads_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    src = _corpus(tmp_path / "c.parquet", _texts(50))
    embedgen.embed_corpus(src, tmp_path / "a.parquet", quiet=True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded although every chunk is cached")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    seen = _count_tokenized(monkeypatch)
    summary = embedgen.embed_corpus(src, tmp_path / "b.parquet", quiet=True)
    assert summary.computed == 0 and summary.cached == summary.chunks
    assert sum(seen) == 0
    assert pq.read_table(tmp_path / "b.parquet").num_rows == summary.chunks
    monkeypatch.undo()
    assert _rows(tmp_path / "a.parquet")[0].equals(_rows(tmp_path / "b.parquet")[0])


def test_a_fully_cached_rerun_imports_no_onnxruntime(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = _corpus(tmp_path / "c.parquet", _texts(20))
    embedgen.embed_corpus(src, tmp_path / "a.parquet", quiet=True)
    code = (
        "import sys\n"
        "from embedgen.cli import main\n"
        "try:\n"
        f"    main(['run', {str(src)!r}, '-o', {str(tmp_path / 'b.parquet')!r}, '--quiet'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('onnxruntime' in sys.modules, 'onnx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_a_cleared_vector_is_recomputed_from_a_known_document(tmp_path: Path) -> None:
    from embedgen.cache import CacheAdmin, resolve_cache_dir

    src = _corpus(tmp_path / "c.parquet", _texts(30))
    opts = {"quiet": True, "max_tokens": 32, "model": ORIGINAL}
    first = embedgen.embed_corpus(src, tmp_path / "a.parquet", **opts)
    with CacheAdmin.open(resolve_cache_dir()) as admin:
        (model,) = admin.models()
        admin.clear(model.name)  # vectors gone; document records stay
    again = embedgen.embed_corpus(src, tmp_path / "b.parquet", **opts)
    assert again.computed == first.computed  # every distinct chunk again
    _, a = _rows(tmp_path / "a.parquet")
    _, b = _rows(tmp_path / "b.parquet")
    assert (a * b).sum(axis=1).min() > 0.99999


def test_a_plain_model_file_is_hashed_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from embedgen.models import local

    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights " * 1000)
    calls: list[Path] = []
    original = local.sha256_file

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        calls.append(path)
        return original(path, chunk)

    monkeypatch.setattr(local, "sha256_file", counting)
    first = local.identity_sha256(model)
    assert first == hashlib.sha256(model.read_bytes()).hexdigest()
    assert local.identity_sha256(model) == first and len(calls) == 1  # remembered
    with model.open("ab") as f:  # changed: size and mtime differ, so it is read again
        f.write(b"more")
    assert local.identity_sha256(model) == hashlib.sha256(model.read_bytes()).hexdigest()
    assert len(calls) == 2


def test_a_text_new_in_several_held_windows_is_embedded_once(tmp_path: Path) -> None:
    texts = [f"document {i} is about topic {i % 7}" for i in range(64)]
    opts = {"quiet": True, "id_column": "id", "sort_window": 8, "model": ORIGINAL}
    embedgen.embed_corpus(
        _corpus(tmp_path / "a.parquet", texts), tmp_path / "a.out.parquet", **opts
    )
    changed = list(texts)
    for i in (1, 9, 17, 25):  # one miss in each of four windows: they are held together
        changed[i] = "the same new sentence in four documents"
    src = _corpus(tmp_path / "b.parquet", changed)
    summary = embedgen.embed_corpus(src, tmp_path / "b.out.parquet", **opts)
    counts = (summary.computed, summary.duplicate, summary.cached, summary.chunks)
    assert counts == (1, 3, 60, 64)  # the three repeats are copies of the one computed
    _, vecs = _rows(tmp_path / "b.out.parquet")
    for i in (9, 17, 25):
        assert np.array_equal(vecs[i], vecs[1])


def test_windows_with_nothing_to_embed_are_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only windows after one with a miss wait for it: held, a fully cached stretch of a
    large corpus sat beside the loaded model (+81 MB of 1,000,000 rows, #23)."""
    from embedgen.pipeline.run import LocalRun

    texts = [f"document {i} is about topic {i % 7}" for i in range(64)]
    opts = {"quiet": True, "id_column": "id", "sort_window": 8, "model": ORIGINAL}
    embedgen.embed_corpus(
        _corpus(tmp_path / "a.parquet", texts), tmp_path / "a.out.parquet", **opts
    )
    held: list[int] = []
    original = LocalRun._flush

    def recording(self: LocalRun) -> None:
        if self._held:
            held.append(len(self._held))
        original(self)

    monkeypatch.setattr(LocalRun, "_flush", recording)
    changed = [*texts[:60], "a new sentence near the end", *texts[61:]]
    src = _corpus(tmp_path / "b.parquet", changed)
    summary = embedgen.embed_corpus(src, tmp_path / "b.out.parquet", **opts)
    assert (summary.computed, summary.cached) == (1, 63)
    assert len(held) > 1 and max(held) == 1  # before: all eight windows held to the end
    fresh = embedgen.embed_corpus(
        src, tmp_path / "c.out.parquet", **{**opts, "cache_dir": str(tmp_path / "c")}
    )
    assert fresh.computed == 64
    (rerun, rerun_vecs), (full, full_vecs) = (
        _rows(tmp_path / "b.out.parquet"),
        _rows(tmp_path / "c.out.parquet"),
    )
    assert rerun.equals(full) and np.array_equal(rerun_vecs, full_vecs)


def test_the_model_loads_in_the_background_once_a_miss_is_likely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedgen.providers.onnx import OnnxProvider

    loads: list[str] = []
    original = OnnxProvider._load

    def recording(self: OnnxProvider) -> None:
        import threading

        loads.append(threading.current_thread().name)
        original(self)

    monkeypatch.setattr(OnnxProvider, "_load", recording)
    src = _corpus(tmp_path / "c.parquet", [f"sentence {i} on topic {i % 7}" for i in range(40)])
    summary = embedgen.embed_corpus(src, tmp_path / "a.parquet", quiet=True, model=ORIGINAL)
    assert summary.computed == summary.chunks == 40
    assert loads == ["embedgen-load"]  # read and looked up while it loaded, loaded once


def test_a_model_that_fails_to_load_in_the_background_fails_the_run_with_its_error(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    for name in ("tokenizer.json", "config.json"):
        src = Path(embedgen.__file__).parent / "data" / "all-MiniLM-L6-v2" / name
        if src.exists():
            (folder / name).write_bytes(src.read_bytes())
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        '{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}'
    )
    src = _corpus(tmp_path / "c.parquet", _texts(5))
    from embedgen.errors import ModelError

    with pytest.raises(ModelError, match="cannot load ONNX model"):
        embedgen.embed_corpus(src, tmp_path / "a.parquet", quiet=True, model=str(folder))
    assert not (tmp_path / "a.parquet").exists()


def test_a_repeat_within_a_window_of_a_text_repeated_across_windows_gets_its_vector(
    tmp_path: Path,
) -> None:
    texts = [f"document {i} is about topic {i % 7}" for i in range(64)]
    opts = {"quiet": True, "id_column": "id", "sort_window": 8, "model": ORIGINAL}
    embedgen.embed_corpus(
        _corpus(tmp_path / "a.parquet", texts), tmp_path / "a.out.parquet", **opts
    )
    changed = list(texts)
    for i in (1, 9, 10):  # once in the first window, twice in the second
        changed[i] = "a sentence new in two windows"
    summary = embedgen.embed_corpus(
        _corpus(tmp_path / "b.parquet", changed), tmp_path / "b.out.parquet", **opts
    )
    assert summary.computed == 1
    _, vecs = _rows(tmp_path / "b.out.parquet")
    assert np.array_equal(vecs[9], vecs[1]) and np.array_equal(vecs[10], vecs[1])
