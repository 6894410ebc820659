"""``s3://`` inputs and outputs against a real S3-protocol server (moto) on loopback, with
the real ``pyarrow.fs.S3FileSystem`` client: the same rows as from local files, and a
killed run leaves no object under the final key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedgen import embed_corpus as embed
from tests.cache_corpus import cache_written
from tests.s3_server import S3Store

ROW_COLUMNS = ["id", "chunk", "char_start", "char_end", "tokens", "text"]


def _texts(n: int, seed: int) -> list[str]:
    return [
        f"Document {seed}-{i} on topic {i % 5}. " + "More words here. " * (i % 7) for i in range(n)
    ]


def corpus(tmp_path: Path, store: S3Store) -> Path:
    """Two Parquet files and a gzipped JSONL file, locally in ``tmp_path/in`` and at
    ``s3://corpora/in/``."""
    folder = tmp_path / "in"
    folder.mkdir()
    a = _texts(40, 1)
    a[3] = ""  # skipped, listed
    pq.write_table(pa.table({"doc": [f"a{i}" for i in range(40)], "text": a}), folder / "a.parquet")
    pq.write_table(pa.table({"doc": [f"b{i}" for i in range(30)], "text": _texts(30, 2)}),
                   folder / "b.parquet")  # fmt: skip
    import gzip

    with gzip.open(folder / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i, t in enumerate(_texts(20, 3)):
            fh.write(json.dumps({"doc": f"c{i}", "text": t}) + "\n")
    for f in sorted(folder.iterdir()):
        store.put_file(f, f"in/{f.name}")
    return folder


def same_rows(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows > 0
    for col in ROW_COLUMNS:
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    va = np.stack(a.column("embedding").to_numpy(zero_copy_only=False))
    vb = np.stack(b.column("embedding").to_numpy(zero_copy_only=False))
    assert float((va * vb).sum(axis=1).min()) > 0.99999


OPTS = {"id_column": "doc", "max_tokens": 24, "overlap": 4, "sort_window": 16, "quiet": True}


def test_a_prefix_in_s3_gives_the_rows_of_the_local_files(
    tmp_path: Path, s3_store: S3Store
) -> None:
    folder = corpus(tmp_path, s3_store)
    local = embed(folder, tmp_path / "local.parquet", **OPTS)
    remote = embed(s3_store.uri("in/"), s3_store.uri("out/emb.parquet"), **OPTS)
    assert str(remote.output) == "s3:/corpora/out/emb.parquet"
    assert s3_store.keys("out") == ["out/emb.parquet", "out/emb.skipped.jsonl"]  # no temp keys
    same_rows(s3_store.read_table("out/emb.parquet"), pq.read_table(tmp_path / "local.parquet"))
    assert (remote.documents, remote.chunks, remote.skipped) == (
        local.documents, local.chunks, local.skipped,
    )  # fmt: skip
    assert any("summary" not in line for line in remote.lines())
    assert "output:    s3://corpora/out/emb.parquet" in remote.lines()
    skipped = s3_store.fs.open_input_stream("corpora/out/emb.skipped.jsonl").read().decode()
    assert json.loads(skipped.splitlines()[0])["file"] == "s3://corpora/in/a.parquet"


def test_a_glob_and_a_single_object(tmp_path: Path, s3_store: S3Store) -> None:
    folder = corpus(tmp_path, s3_store)
    both = embed(s3_store.uri("in/*.parquet"), tmp_path / "both.parquet", **OPTS)
    assert both.documents == 70
    one = embed(s3_store.uri("in/c.jsonl.gz"), tmp_path / "one.parquet", **OPTS)
    ref = embed(folder / "c.jsonl.gz", tmp_path / "ref.parquet", **OPTS)
    assert one.documents == 20 and one.chunks == ref.chunks
    same_rows(pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "ref.parquet"))
    from embedgen.errors import InputError

    with pytest.raises(InputError, match="no .parquet or .jsonl objects"):
        embed(s3_store.uri("nothing/"), tmp_path / "x.parquet", **OPTS)


def test_kill_9_during_an_s3_output_run_leaves_no_object_and_a_rerun_finishes(
    tmp_path: Path, s3_store: S3Store
) -> None:
    texts = [f"sentence {i} " + "with some more words to embed " * (i % 12) for i in range(4000)]
    src = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": texts}), src)
    s3_store.put_file(src, "big/big.parquet")
    cmd = [sys.executable, "-m", "embedgen", "run", s3_store.uri("big/big.parquet"), "-o",
           s3_store.uri("big-out/emb.parquet"), "--max-tokens", "32", "-q"]  # fmt: skip
    cache = Path(os.environ["EMBEDGEN_CACHE_DIR"])
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if cache_written(cache) > 512 * 1024:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "big-out/emb.parquet" not in s3_store.keys("big-out"), "finished before the kill"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert s3_store.keys("big-out") == ["big-out/emb.parquet"]
    assert s3_store.read_table("big-out/emb.parquet").num_rows >= 4000


def test_a_failed_run_uploads_nothing(tmp_path: Path, s3_store: S3Store) -> None:
    from embedgen.errors import InputError

    src = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"body": ["no text column"]}), src)
    with pytest.raises(InputError, match="no column 'text'"):
        embed(src, s3_store.uri("bad/out.parquet"), quiet=True)
    assert s3_store.keys("bad") == []
