"""A damaged cache is found, never served: checksummed values, checked vectors, LMDB's own
damage and a truncated file as one-line errors. Runs that may crash go in a subprocess."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedgen.cache import CacheAdmin, cache_keys, doc_keys, fingerprint_id
from embedgen.cache.env import used_bytes
from embedgen.cli import app
from tests.cache_corpus import assert_same_output, sentences, write_corpus

runner = CliRunner()
DIM = 16
EXACT = ["--model", "default-original"]  # fp32: a vector does not depend on its batch
DAMAGED = "is damaged"
DELETE = "delete that directory"


def _unit(n: int, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _raw(path: Path, db: bytes, key: bytes, value: bytes | None = None) -> bytes:
    """Read (and with ``value``, overwrite) one stored value, bypassing the cache's checks."""
    import lmdb

    env = lmdb.open(str(path), max_dbs=4, map_size=64 * 1024 * 1024)
    try:
        handle = env.open_db(db)
        with env.begin(write=value is not None) as txn:
            old = bytes(txn.get(key, b"", db=handle))
            if value is not None:
                txn.put(key, value, db=handle)
        return old
    finally:
        env.close()


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes(b ^ 0xFF for b in raw[at : at + 2]) + raw[at + 2 :]


def _used(data: Path) -> bytearray:
    """The used part of ``data.mdb`` (beyond it, a sparse tail up to the map size)."""
    used = used_bytes(data)
    assert used is not None
    with data.open("rb") as fh:
        return bytearray(fh.read(used))


def _put_back(data: Path, blob: bytearray) -> None:
    with data.open("r+b") as fh:
        fh.write(blob)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``embedgen ARGS`` in its own process: a crash (SIGBUS, SIGSEGV) must not take pytest."""
    cmd = [sys.executable, "-m", "embedgen", *args]
    return subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=300)


# -- values, records ----------------------------------------------------------------------


def test_a_flipped_byte_in_a_value_or_record_is_a_miss_and_verify_finds_it(tmp_path: Path) -> None:
    fp = fingerprint_id("onnx|unit")
    keys = cache_keys(fp, [f"t{i}" for i in range(6)])
    docs = doc_keys(fp, "window=8|overlap=0", ["a doc"])
    with CacheAdmin.open(tmp_path) as c:
        c.register_model(fp, "onnx|unit", "unit", DIM, normalized=True)
        c.put_many(fp, keys, _unit(6))
        c.put_docs([(docs[0], np.asarray([[0, 5, 2]], "<u4").tobytes())])
    _raw(tmp_path, b"vectors", keys[0], _flip(_raw(tmp_path, b"vectors", keys[0]), 9))
    _raw(tmp_path, b"vectors", keys[1], _flip(_raw(tmp_path, b"vectors", keys[1]), DIM * 4))
    _raw(tmp_path, b"meta", docs[0], _flip(_raw(tmp_path, b"meta", docs[0]), 4))
    with CacheAdmin.open(tmp_path) as c:
        got = c.get_many(fp, keys)
        assert [v is None for v in got] == [True, True, False, False, False, False]
        assert c.get_docs(docs) == [None]
        assert c.bad_reads == 3
        report = c.verify()
        assert report.reasons == {"checksum mismatch": 2} and report.bad_records == 1
    result = runner.invoke(app, ["cache", "verify", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1 and "1 damaged document or run records" in result.output
    result = runner.invoke(app, ["cache", "verify", "--cache-dir", str(tmp_path), "--fix"])
    assert result.exit_code == 0, result.output
    with CacheAdmin.open(tmp_path) as c:
        report = c.verify()
        assert (report.bad, report.bad_records, report.bad_models) == (0, 0, 0)


def test_a_damaged_model_record_is_found(tmp_path: Path) -> None:
    fp = fingerprint_id("onnx|unit")
    with CacheAdmin.open(tmp_path) as c:
        c.register_model(fp, "onnx|unit", "unit", DIM)
    raw = _raw(tmp_path, b"models", fp)
    at = raw.index(b'"dim": 16') + len(b'"dim": ')
    _raw(tmp_path, b"models", fp, raw[:at] + b"61" + raw[at + 2 :])  # still valid JSON
    with CacheAdmin.open(tmp_path) as c:
        assert c.models() == [] and c.verify().bad_models == 1


def test_a_vector_its_model_cannot_make_is_a_miss(tmp_path: Path) -> None:
    """A normalized model's vector of norm 3, a huge one: never served, even with a good check."""
    unit, free = fingerprint_id("onnx|unit"), fingerprint_id("api|free")
    with CacheAdmin.open(tmp_path) as c:
        c.register_model(unit, "onnx|unit", "unit", DIM, normalized=True)
        c.register_model(free, "api|free", "free", DIM)
        u, f = cache_keys(unit, ["a", "b"]), cache_keys(free, ["a", "b"])
        assert c.put_many(unit, u, np.vstack([_unit(1), 3 * _unit(1)])) == 1  # not stored
        assert c.put_many(free, f, np.vstack([3 * _unit(1), 1e6 * _unit(1)])) == 1
        assert [v is None for v in c.get_many(unit, u) + c.get_many(free, f)] == [
            False, True, False, True,
        ]  # fmt: skip


def test_values_written_before_checksums_stay_readable(tmp_path: Path) -> None:
    """The format before checksums: plain vector bytes and JSON records, read as they are."""
    fp = fingerprint_id("onnx|old")
    keys = cache_keys(fp, ["old", "older"])
    vectors = _unit(2)
    with CacheAdmin.open(tmp_path) as c:
        c.register_model(fp, "onnx|old", "old", DIM)
    record = {"description": "onnx|old", "name": "old", "dim": DIM, "dtype": "float32"}
    _raw(tmp_path, b"models", fp, json.dumps(record).encode())
    _raw(tmp_path, b"vectors", keys[0], vectors[0].tobytes())
    _raw(tmp_path, b"vectors", keys[1], np.full(DIM, np.inf, np.float32).tobytes())
    with CacheAdmin.open(tmp_path) as c:
        got = c.get_many(fp, keys)
        assert got[0] is not None and np.array_equal(got[0], vectors[0]) and got[1] is None
        assert c.verify().reasons == {"not finite": 1}
        c.register_model(fp, "onnx|old", "old", DIM)  # a run re-registers: now checksummed
    assert _raw(tmp_path, b"models", fp) != json.dumps(record).encode()


@pytest.mark.skipif(sys.platform == "win32", reason="LMDB preallocates the map on Windows")
def test_the_data_file_covers_the_map_sparsely(tmp_path: Path) -> None:
    """A read that damage sends past the used pages finds zeros (damage LMDB reports), not
    the end of the file (SIGBUS); the tail is sparse, so it takes no disk space."""
    fp = fingerprint_id("onnx|unit")
    with CacheAdmin.open(tmp_path, initial_map_size=128 * 1024) as c:
        c.register_model(fp, "onnx|unit", "unit", DIM)
        c.put_many(fp, cache_keys(fp, [f"t{i}" for i in range(3000)]), _unit(3000))
        size = (tmp_path / "data.mdb").stat().st_size
        assert size == c.map_size and c.map_events["grown"] >= 1
    used = used_bytes(tmp_path / "data.mdb")
    assert used is not None and used < size
    if hasattr(os.stat_result, "st_blocks"):
        assert (tmp_path / "data.mdb").stat().st_blocks * 512 < size


# -- a real run over a damaged cache -------------------------------------------------------


@pytest.fixture
def populated(tmp_path: Path, isolated_env: Path) -> tuple[Path, Path, Path]:
    """(corpus, reference output, cache dir) after one real run of 200 texts."""
    src = write_corpus(tmp_path / "c.parquet", [f"d{i}" for i in range(200)], sentences(200))
    ref = tmp_path / "ref.parquet"
    result = runner.invoke(app, ["run", str(src), "-o", str(ref), *EXACT])
    assert result.exit_code == 0, result.output
    return src, ref, isolated_env / "cache"


def test_flipped_bytes_in_40_values_are_recomputed_with_a_warning(
    populated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The issue's damage, aimed at stored vectors: verify finds all 40, the re-run serves none."""
    src, ref, cache_dir = populated
    data = cache_dir / "data.mdb"
    blob = _used(data)
    with CacheAdmin.open(cache_dir, readonly=True) as c:
        (model,) = c.models()
    keys = cache_keys(model.fingerprint_id, sentences(200))
    values = [_raw(cache_dir, b"vectors", k) for k in keys[:40]]
    rng = random.Random(7)
    for value in values:  # every copy: LMDB's copy-on-write leaves old ones in free pages
        offset, start = rng.randrange(0, len(value) - 2), blob.find(value)
        while start >= 0:
            at = start + offset
            blob[at : at + 2] = bytes(b ^ 0xFF for b in blob[at : at + 2])
            start = blob.find(value, start + 1)
    _put_back(data, blob)

    checked = _cli("cache", "verify", "--cache-dir", str(cache_dir))
    assert checked.returncode == 1 and ": 40 bad" in checked.stdout, checked.stdout
    out = tmp_path / "out.parquet"
    done = _cli("run", str(src), "-o", str(out), *EXACT)
    assert done.returncode == 0, done.stderr
    assert "(160 cached, 40 computed, 0 duplicate)" in done.stderr
    assert "40 damaged cache values were ignored and recomputed" in done.stderr
    assert_same_output(out, ref, atol=0.0)
    assert _cli("cache", "verify", "--cache-dir", str(cache_dir)).returncode == 0


def test_a_damaged_value_length_is_never_read_past_the_file(
    populated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A leaf node whose length field now says 64 MiB (the file is far shorter): the value is
    a miss, and nothing reads it out of the map (that was SIGBUS past the file's end)."""
    import struct

    src, ref, cache_dir = populated
    with CacheAdmin.open(cache_dir, readonly=True) as c:
        (model,) = c.models()
    key = cache_keys(model.fingerprint_id, sentences(200))[5]
    data = cache_dir / "data.mdb"
    blob = _used(data)
    node = key + _raw(cache_dir, b"vectors", key)
    at = blob.find(node)
    while at >= 0:  # every copy (copy-on-write leaves old ones); the node starts 8 bytes before
        struct.pack_into("=HH", blob, at - 8, 0, 0x0400)  # its size: 64 MiB
        at = blob.find(node, at + 1)
    _put_back(data, blob)

    checked = _cli("cache", "verify", "--cache-dir", str(cache_dir))
    assert checked.returncode == 1, checked.stderr
    assert "(1 wrong size)" in checked.stdout or DELETE in checked.stderr
    _right_or_one_line(src, ref, tmp_path / "out.parquet")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_flips_anywhere_give_the_right_output_or_one_line(
    populated: tuple[Path, Path, Path], tmp_path: Path, seed: int
) -> None:
    """Two bytes flipped at 40 random offsets of data.mdb (values, branch pages, headers): the
    re-run gives exactly the reference or stops with the one-line damaged error; no crash."""
    src, ref, cache_dir = populated
    data = cache_dir / "data.mdb"
    blob = _used(data)
    rng = random.Random(seed)
    for _ in range(40):
        at = rng.randrange(0, len(blob) - 2)
        blob[at : at + 2] = bytes(b ^ 0xFF for b in blob[at : at + 2])
    _put_back(data, blob)
    _right_or_one_line(src, ref, tmp_path / "out.parquet")


def _right_or_one_line(src: Path, ref: Path, out: Path) -> None:
    """A run over a damaged cache: exactly the reference, or the one-line damaged error."""
    done = _cli("run", str(src), "-o", str(out), *EXACT)
    if done.returncode == 0:
        assert_same_output(out, ref, atol=0.0)
        return
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert DAMAGED in lines[0] and DELETE in lines[0]
    assert not out.with_name(out.name + ".lock").exists()


# -- a truncated file ------------------------------------------------------------------------


def test_a_truncated_cache_file_is_one_line_not_sigbus(
    populated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    src, _, cache_dir = populated
    data = cache_dir / "data.mdb"
    used = used_bytes(data)
    assert used is not None and data.stat().st_size >= used
    os.truncate(data, used // 2)
    out = tmp_path / "out.parquet"
    for args in (["run", str(src), "-o", str(out), *EXACT], ["cache", "verify"]):
        done = _cli(*args)
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr  # SIGBUS was -7 / 135
        assert DAMAGED in lines[0] and "truncated" in lines[0] and DELETE in lines[0]
    assert not out.with_name(out.name + ".lock").exists()
    os.truncate(data, 100)  # not even its header
    done = _cli("cache", "stats")
    assert done.returncode == 1 and "no valid LMDB header" in done.stderr
