"""A run that embeds every chunk opens its model session early, on a thread, while the
pipeline is set up; the provider takes that session only when it was opened exactly as the
provider would open its own, and a failed early load leaves the run's own error."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embedgen
from embedgen.config import Config
from embedgen.errors import ModelError
from embedgen.providers import onnx_session
from embedgen.providers.onnx_session import early_plan, open_session


def _corpus(path: Path, n: int = 30) -> Path:
    texts = [f"text {i} is about topic {i % 5}" + " and more" * (i % 9) for i in range(n)]
    pq.write_table(pa.table({"id": list(range(n)), "text": texts}), path)
    return path


def _broken_model(folder: Path) -> Path:
    """A model folder whose ``model.onnx`` is not a graph (its tokenizer is fine)."""
    shutil.copytree(Path(embedgen.__file__).parent / "data" / "all-MiniLM-L6-v2", folder)
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    return folder


def _vectors(path: Path) -> np.ndarray:
    return np.array(pq.read_table(path).column("embedding").to_pylist(), dtype=np.float32)


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each onnxruntime session of the test was opened on."""
    import onnxruntime

    opened: list[str] = []
    original = onnxruntime.InferenceSession

    def recording(*args: Any, **kwargs: Any) -> Any:
        opened.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    return opened


def test_a_run_without_the_cache_takes_the_early_session_and_gives_the_same_bits(
    tmp_path: Path, sessions: list[str]
) -> None:
    src = _corpus(tmp_path / "c.parquet")
    early = embedgen.embed_corpus(src, tmp_path / "early.parquet", quiet=True, use_cache=False)
    assert early.computed == early.chunks == 30
    assert sessions == ["embedgen-early-load"]  # opened once, early, and taken
    sessions.clear()
    cold = embedgen.embed_corpus(src, tmp_path / "cold.parquet", quiet=True)  # an empty cache
    assert cold.computed == 30
    assert sessions == ["embedgen-early-load"]  # a first run embeds everything too
    assert np.array_equal(_vectors(tmp_path / "early.parquet"), _vectors(tmp_path / "cold.parquet"))
    sessions.clear()
    more = _corpus(tmp_path / "more.parquet", 40)  # 30 texts cached, 10 new
    warm = embedgen.embed_corpus(more, tmp_path / "warm.parquet", quiet=True)
    assert (warm.cached, warm.computed) == (30, 10)
    assert sessions == ["embedgen-load"]  # the cache might have held every vector: not early
    assert np.array_equal(
        _vectors(tmp_path / "warm.parquet")[:30], _vectors(tmp_path / "cold.parquet")
    )


def test_an_early_session_opened_with_another_plan_is_dropped_not_used() -> None:
    cfg = Config.model_validate({"run": {"use_cache": False}})
    plan = early_plan(cfg)
    assert plan is not None and plan.intra_op_threads == 1  # the default runs per text
    early = onnx_session._Early()
    early.start(plan)
    other = dataclasses.replace(plan, optimization="disable")
    assert early.take(other) is None  # waited for, not taken
    assert early.take(plan) is None  # and gone: nobody holds a second session
    early.start(plan)  # one early session per process
    early.drop()
    assert early.thread is None and early.session is None
    early.start(plan)
    session = early.take(plan)
    assert session is not None and session._model_path == plan.path


def test_only_a_run_that_embeds_every_chunk_with_its_model_plans_one(tmp_path: Path) -> None:
    assert early_plan(Config()) is not None  # the cache holds nothing yet
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data.mdb").write_bytes(b"")
    with_cache = Config.model_validate({"run": {"cache_dir": str(cache)}})
    assert early_plan(with_cache) is None  # the cache may hold every vector
    no_cache = {"run": {"use_cache": False, "cache_dir": str(cache)}}
    assert early_plan(Config.model_validate(no_cache)) is not None
    api_first = {
        "run": {"use_cache": False, "providers": ["api", "local"]},
        "providers": {"api": {"kind": "openai", "model": "text-embedding-3-small"}},
    }
    assert early_plan(Config.model_validate(api_first)) is None
    missing = {"run": {"use_cache": False}, "model": {"model": str(tmp_path / "nowhere")}}
    assert early_plan(Config.model_validate(missing)) is None  # the provider says so itself


def test_the_default_not_built_yet_is_built_by_the_run_not_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv("EMBEDGEN_MODELS_DIR", str(empty))
    assert early_plan(Config.model_validate({"run": {"use_cache": False}})) is None
    assert list(empty.iterdir()) == []  # planning built nothing


def test_a_model_that_fails_to_load_early_fails_the_run_with_its_own_error(
    tmp_path: Path, sessions: list[str]
) -> None:
    folder = _broken_model(tmp_path / "broken")
    src = _corpus(tmp_path / "c.parquet", 5)
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        embedgen.embed_corpus(
            src, tmp_path / "a.parquet", quiet=True, model=str(folder), use_cache=False
        )
    assert sessions[0] == "embedgen-early-load" and len(sessions) == 2  # early, then its own
    assert not (tmp_path / "a.parquet").exists()
    plan = early_plan(
        Config.model_validate({"run": {"use_cache": False}, "model": {"model": str(folder)}})
    )
    assert plan is not None and plan.path == str(folder / "model.onnx")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        open_session(__import__("onnxruntime"), plan)


def test_the_command_line_says_the_error_of_a_broken_model_in_one_line(tmp_path: Path) -> None:
    folder = _broken_model(tmp_path / "broken")
    src = _corpus(tmp_path / "c.parquet", 5)
    cmd = [sys.executable, "-m", "embedgen", "run", str(src), "-o", str(tmp_path / "a.parquet")]
    done = subprocess.run(
        [*cmd, "--no-cache", "--model", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "cannot load ONNX model" in done.stderr and "Traceback" not in done.stderr
