"""The LMDB vector cache and `embedgen cache`: real LMDB environments in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedgen.cache import (
    CacheAdmin,
    VectorCache,
    cache_key,
    cache_keys,
    default_cache_dir,
    fingerprint_id,
)
from embedgen.errors import CacheError, UsageError
from tests.cache_corpus import mount_tmpfs

DIM = 16
SMALL_MAP = 64 * 1024


def _fp(name: str = "model-a") -> bytes:
    return fingerprint_id(f"onnx|{name}|mean|normalize|dim={DIM}|float32")


def _vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _open(path: Path, **kwargs: object) -> CacheAdmin:
    return CacheAdmin.open(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cache(cache_dir: Path):
    with _open(cache_dir) as c:
        yield c


def _raw_put(path: Path, items: dict[bytes, bytes], db: bytes = b"vectors") -> None:
    """Write values straight into the LMDB environment, bypassing VectorCache."""
    import lmdb

    env = lmdb.open(str(path), max_dbs=4, map_size=64 * 1024 * 1024)
    try:
        handle = env.open_db(db)
        with env.begin(write=True) as txn:
            for key, value in items.items():
                txn.put(key, value, db=handle)
    finally:
        env.close()


# -- keys ---------------------------------------------------------------------------------


def test_key_is_fingerprint_prefix_plus_blake2b_of_fingerprint_and_text() -> None:
    fp = _fp()
    key = cache_key(fp, "héllo")
    expected = hashlib.blake2b(fp + "héllo".encode(), digest_size=16).digest()
    assert len(fp) == 16 and len(key) == 32
    assert key == fp + expected
    assert cache_key(_fp("model-b"), "héllo") != key
    assert cache_key(fp, "hello") != key
    assert len(cache_key(fp, "lone \ud800 surrogate")) == 32
    assert cache_keys(fp, ["a", "b"]) == [cache_key(fp, "a"), cache_key(fp, "b")]


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBEDGEN_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("EMBEDGEN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "xdg" / "embedgen" / "vectors"


# -- round trips and misses -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(cache: CacheAdmin, dtype: str) -> None:
    fp = _fp(dtype)
    cache.register_model(fp, f"desc {dtype}", "mini", DIM, dtype)
    keys = cache_keys(fp, [f"text {i}" for i in range(50)])
    vectors = _vectors(50)
    assert cache.put_many(fp, keys, vectors) == 50
    got = cache.get_many(fp, keys)
    assert all(v is not None for v in got)
    stacked = np.stack(got)  # type: ignore[arg-type]
    assert stacked.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(stacked, vectors.astype(dtype))
    (row,) = cache.stats()
    assert (row.entries, row.bytes) == (50, 50 * (DIM * np.dtype(dtype).itemsize + 4))  # + check
    assert row.model is not None and row.model.name == "mini"


def test_misses_and_partial_hits(cache: CacheAdmin) -> None:
    fp = _fp()
    keys = cache_keys(fp, ["a", "b", "c"])
    assert cache.get_many(fp, keys) == [None, None, None]  # model not even registered
    cache.register_model(fp, "d", "m", DIM)
    cache.put_many(fp, keys[1:2], _vectors(1))
    got = cache.get_many(fp, keys)
    assert got[0] is None and got[2] is None and got[1] is not None
    assert cache.bad_reads == 0


def test_different_fingerprints_never_share_entries(cache: CacheAdmin) -> None:
    fp_a, fp_b = _fp("a"), _fp("b")
    cache.register_model(fp_a, "a", "a", DIM)
    cache.register_model(fp_b, "b", "b", DIM)
    texts = ["same text", "other text"]
    cache.put_many(fp_a, cache_keys(fp_a, texts), _vectors(2))
    assert cache.get_many(fp_b, cache_keys(fp_b, texts)) == [None, None]
    with pytest.raises(ValueError, match="same fingerprint"):
        cache.get_many(fp_b, cache_keys(fp_a, texts))


def test_put_checks_shape_and_skips_rows_not_finite(cache: CacheAdmin) -> None:
    fp = _fp()
    keys = cache_keys(fp, ["a", "b"])
    with pytest.raises(ValueError, match="register_model"):
        cache.put_many(fp, keys, _vectors(2))
    cache.register_model(fp, "d", "m", DIM, "float16")
    with pytest.raises(ValueError, match="shape"):
        cache.put_many(fp, keys, _vectors(2, DIM + 1))
    bad = _vectors(2)
    bad[0, 3] = np.nan
    bad[1, 0] = 1e6  # overflows float16 to inf
    assert cache.put_many(fp, keys, bad) == 0
    assert cache.get_many(fp, keys) == [None, None]


def test_register_model_refuses_a_changed_dim(cache: CacheAdmin) -> None:
    fp = _fp()
    first = cache.register_model(fp, "d", "m", DIM)
    assert cache.register_model(fp, "d", "m", DIM).created == first.created
    with pytest.raises(ValueError, match="dim"):
        cache.register_model(fp, "d", "m", DIM * 2)


def test_record_run_and_last_run(cache: CacheAdmin) -> None:
    fp = _fp()
    cache.register_model(fp, "d", "mini", DIM)
    assert cache.last_run() is None
    cache.record_run(hits=30, misses=10, fingerprint=fp)
    last = cache.last_run()
    assert last is not None
    assert (last["hits"], last["misses"], last["model"]) == (30, 10, "mini")
    assert last["hit_rate"] == pytest.approx(0.75)


# -- corrupt values, verify -------------------------------------------------------------


def _corrupted(cache_dir: Path) -> tuple[bytes, list[bytes]]:
    """A cache with 10 good entries of model m, then bad ones written raw; closed."""
    fp = _fp()
    keys = cache_keys(fp, [f"t{i}" for i in range(10)])
    with _open(cache_dir) as c:
        c.register_model(fp, "d", "m", DIM)
        c.put_many(fp, keys, _vectors(10))
    nan = np.full(DIM, np.nan, np.float32).tobytes()
    _raw_put(
        cache_dir,
        {
            keys[0]: b"garbage",  # truncated / wrong size
            keys[1]: nan,  # right size, not finite
            keys[2]: _vectors(1, DIM * 2).tobytes(),  # a vector of another dim
            _fp("unknown") + bytes(16): _vectors(1).tobytes(),  # no model record
            b"short": b"x",  # not a cache key
        },
    )
    return fp, keys


def test_corrupt_values_are_misses_and_verify_fix_removes_them(cache_dir: Path) -> None:
    fp, keys = _corrupted(cache_dir)
    with _open(cache_dir) as c:
        got = c.get_many(fp, keys)
        assert [v is None for v in got] == [True] * 3 + [False] * 7
        assert c.bad_reads == 3
        report = c.verify()
        assert (report.checked, report.bad, report.removed) == (12, 5, 0)
        assert report.reasons == {
            "wrong size": 2,
            "not finite": 1,
            "unknown model": 1,
            "bad key": 1,
        }
        fixed = c.verify(fix=True)
        assert (fixed.bad, fixed.removed, fixed.remaining) == (5, 5, 0)
        assert c.verify().bad == 0
        assert sum(v is not None for v in c.get_many(fp, keys)) == 7
        # a recomputed vector overwrites the removed entry
        c.put_many(fp, keys[:1], _vectors(1))
        assert c.get_many(fp, keys[:1])[0] is not None


def test_verify_reports_a_damaged_model_record(cache_dir: Path) -> None:
    fp, _ = _corrupted(cache_dir)
    _raw_put(cache_dir, {fp: b"{not json"}, db=b"models")
    with _open(cache_dir) as c:
        report = c.verify()
        assert report.bad_models == 1 and report.reasons["unknown model"] == 11
        c.verify(fix=True)
        assert c.verify().bad == 0 and c.stats() == []


def test_damaged_environment_is_a_cache_error(cache_dir: Path) -> None:
    cache_dir.mkdir()
    (cache_dir / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(CacheError, match="damaged"):
        _open(cache_dir)


# -- map size --------------------------------------------------------------------------------


def test_map_grows_from_a_tiny_initial_size(cache_dir: Path) -> None:
    fp = _fp()
    with _open(cache_dir, initial_map_size=SMALL_MAP) as c:
        c.register_model(fp, "d", "m", DIM)
        for batch in range(40):
            keys = cache_keys(fp, [f"{batch}-{i}" for i in range(100)])
            c.put_many(fp, keys, _vectors(100, seed=batch))
        assert c.map_events["grown"] >= 3 and c.map_size > SMALL_MAP
        keys = cache_keys(fp, [f"39-{i}" for i in range(100)])
        np.testing.assert_array_equal(np.stack(c.get_many(fp, keys)), _vectors(100, seed=39))  # type: ignore[arg-type]
        assert c.stats()[0].entries == 4000
    with _open(cache_dir, initial_map_size=SMALL_MAP) as c:  # reopens at the reached size
        assert c.map_size > SMALL_MAP and c.verify().bad == 0


def test_threads_share_one_environment_while_it_grows(cache_dir: Path) -> None:
    fp = _fp()
    errors: list[BaseException] = []
    with _open(cache_dir, initial_map_size=SMALL_MAP) as c:
        c.register_model(fp, "d", "m", DIM)

        def work(worker: int) -> None:
            try:
                with _open(cache_dir) as mine:  # a second handle shares the environment
                    for batch in range(15):
                        keys = cache_keys(fp, [f"{worker}-{batch}-{i}" for i in range(50)])
                        mine.put_many(fp, keys, _vectors(50, seed=batch))
                        if any(v is None for v in mine.get_many(fp, keys)):
                            raise AssertionError("a vector just written is missing")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert c.stats()[0].entries == 4 * 15 * 50
        assert c.map_events["grown"] >= 1


_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from embedgen.cache import VectorCache, cache_keys, fingerprint_id

    path, name, batches, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    fp = fingerprint_id("onnx|shared")
    with VectorCache.open(path, initial_map_size=size) as c:
        c.register_model(fp, "onnx|shared", "shared", 16)
        for b in range(batches):
            keys = cache_keys(fp, [f"{name}-{b}-{i}" for i in range(100)] + [f"common-{b}"])
            vecs = np.full((101, 16), b, np.float32)
            c.put_many(fp, keys, vecs)
            assert all(v is not None for v in c.get_many(fp, keys))
        print(json.dumps(c.map_events))
    """
)


def _worker(path: Path, name: str, batches: int, size: int = SMALL_MAP) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", _WORKER, str(path), name, str(batches), str(size)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_write_one_cache_concurrently(cache_dir: Path) -> None:
    procs = [_worker(cache_dir, name, 40) for name in ("p1", "p2")]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    events = [json.loads(out) for out, _ in outputs]
    assert sum(e["grown"] + e["adopted"] for e in events) >= 2
    fp = fingerprint_id("onnx|shared")
    with _open(cache_dir) as c:
        for name in ("p1", "p2"):
            keys = cache_keys(fp, [f"{name}-{b}-{i}" for b in range(40) for i in range(100)])
            assert all(v is not None for v in c.get_many(fp, keys))
        assert c.stats()[0].entries == 2 * 40 * 100 + 40
        assert c.verify().bad == 0


def test_a_map_grown_by_another_process_is_adopted(cache_dir: Path) -> None:
    fp = fingerprint_id("onnx|shared")
    with _open(cache_dir, initial_map_size=SMALL_MAP) as c:
        c.register_model(fp, "onnx|shared", "shared", DIM)
        first = cache_keys(fp, ["before"])
        c.put_many(fp, first, _vectors(1))
        small = c.map_size
        proc = _worker(cache_dir, "other", 30)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["grown"] >= 1
        assert c.get_many(fp, first)[0] is not None  # the map grew under us: adopted
        assert c.map_events["adopted"] >= 1 and c.map_size > small
        after = cache_keys(fp, [f"after-{i}" for i in range(500)])
        assert c.put_many(fp, after, _vectors(500)) == 500
        assert c.stats()[0].entries == 1 + 30 * 101 + 500


# -- errors ----------------------------------------------------------------------------------


def test_cache_path_under_a_file_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="cannot be created.*--no-cache"):
        _open(blocker / "cache")


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=True)


def test_read_only_directory_is_a_cache_error(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    if sys.platform != "win32" and os.geteuid() != 0:
        target.mkdir()
        target.chmod(0o500)
        if os.access(target, os.W_OK):
            pytest.skip("this user can write a mode 500 directory")
    else:
        mount_tmpfs(target, "ro,size=1m")
    try:
        for where in (target, target / "sub"):
            with pytest.raises(CacheError, match="is not writable; set --cache-dir"):
                _open(where)
    finally:
        if os.geteuid() == 0:
            _umount(target)
        else:
            target.chmod(0o700)


def _fill(c: VectorCache) -> None:
    fp = _fp()
    c.register_model(fp, "d", "m", 256)
    for batch in range(200):  # bounded: 200 x 100 x 1 KiB = 20 MiB, far above the limit
        keys = cache_keys(fp, [f"{batch}-{i}" for i in range(100)])
        c.put_many(fp, keys, np.ones((100, 256), np.float32))


def test_full_disk_is_a_cache_error(tmp_path: Path) -> None:
    target = tmp_path / "small"
    mount_tmpfs(target, "size=512k")
    try:
        with (
            _open(target / "cache", initial_map_size=SMALL_MAP) as c,
            pytest.raises(CacheError, match="disk full while writing the cache at"),
        ):
            _fill(c)
    finally:
        _umount(target)


_FSIZE_WORKER = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from embedgen.errors import CacheError
    from embedgen.cache import VectorCache, cache_keys, fingerprint_id

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))
    fp = fingerprint_id("d")
    with VectorCache.open(sys.argv[1], initial_map_size=64 * 1024) as c:
        c.register_model(fp, "d", "m", 256)
        try:
            for batch in range(200):
                keys = cache_keys(fp, [f"{batch}-{i}" for i in range(100)])
                c.put_many(fp, keys, np.ones((100, 256), np.float32))
        except CacheError as exc:
            print(exc)
            sys.exit(3)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_failed_write_is_a_cache_error_keeping_committed_batches(cache_dir: Path) -> None:
    cmd = [sys.executable, "-c", _FSIZE_WORKER, str(cache_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "free space or move the cache with --cache-dir" in done.stdout
    assert "\n" not in done.stdout.strip()
    with _open(cache_dir) as c:  # what was committed before the failure is intact
        assert c.verify().bad == 0 and c.stats()[0].entries > 0


def test_read_only_handles(cache_dir: Path) -> None:
    with pytest.raises(CacheError, match="no cache at"):
        _open(cache_dir, readonly=True)
    assert not cache_dir.exists()
    with _open(cache_dir) as c:
        c.register_model(_fp(), "d", "m", DIM)
    with _open(cache_dir, readonly=True) as ro:
        assert [m.name for m in ro.models()] == ["m"]
        with pytest.raises(CacheError, match="read-only"):
            ro.record_run(1, 1, _fp())
        with pytest.raises(CacheError, match="already open read-only"):
            _open(cache_dir)


# -- clear -------------------------------------------------------------------------------------


def _two_models(cache_dir: Path) -> tuple[bytes, bytes]:
    fp_a, fp_b = _fp("a"), _fp("b")
    with _open(cache_dir) as c:
        c.register_model(fp_a, "onnx|a", "alpha", DIM)
        c.register_model(fp_b, "onnx|b", "beta", DIM, "float16")
        c.put_many(fp_a, cache_keys(fp_a, [str(i) for i in range(30)]), _vectors(30))
        c.put_many(fp_b, cache_keys(fp_b, [str(i) for i in range(20)]), _vectors(20))
        c.record_run(0, 50, fp_b)
    return fp_a, fp_b


def test_clear_one_model_by_name_or_fingerprint_prefix(cache_dir: Path) -> None:
    fp_a, fp_b = _two_models(cache_dir)
    with _open(cache_dir) as c:
        with pytest.raises(UsageError, match="no model 'gamma'"):
            c.clear("gamma")
        assert c.clear("beta") == 20
        assert [(s.model.name, s.entries) for s in c.stats() if s.model] == [("alpha", 30)]
        assert c.clear(fp_a.hex()[:8]) == 30
        assert c.stats() == [] and c.models() == []


def test_clear_everything(cache_dir: Path) -> None:
    _two_models(cache_dir)
    with _open(cache_dir) as c:
        assert c.clear() == 50
        assert c.stats() == [] and c.last_run() is None


# -- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    from embedgen.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, ["cache", *args], input=input)

    return invoke


def test_cli_path_follows_option_and_env(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EMBEDGEN_CACHE_DIR", str(tmp_path / "from-env"))
    assert cli("path").output.strip() == str(tmp_path / "from-env")
    result = cli("path", "--cache-dir", str(tmp_path / "opt"))
    assert result.exit_code == 0 and result.output.strip() == str(tmp_path / "opt")


def test_cli_stats(cli, cache_dir: Path) -> None:
    assert "empty" in cli("stats", "--cache-dir", str(cache_dir)).output
    assert not cache_dir.exists()
    fp_a, _ = _two_models(cache_dir)
    result = cli("stats", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0, result.output
    for text in ("alpha", "beta", "float16", fp_a.hex()[:12], "0 of 50 chunks", "0.0%"):
        assert text in result.output
    data = json.loads(cli("stats", "--json", "--cache-dir", str(cache_dir)).output)
    rows = {m["name"]: m for m in data["models"]}
    assert rows["alpha"]["entries"] == 30 and rows["alpha"]["bytes"] == 30 * (DIM * 4 + 4)
    assert rows["beta"]["bytes"] == 20 * (DIM * 2 + 4) and rows["beta"]["description"] == "onnx|b"
    assert data["last_run"]["misses"] == 50 and data["last_run"]["model"] == "beta"


def test_cli_verify_exits_1_until_fixed(cli, cache_dir: Path) -> None:
    _corrupted(cache_dir)
    result = cli("verify", "--cache-dir", str(cache_dir))
    assert result.exit_code == 1
    assert "checked 12 entries" in result.output and "5 bad" in result.output
    result = cli("verify", "--fix", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0, result.output
    assert "removed 5 bad entries" in result.output
    result = cli("verify", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0 and "checked 7 entries" in result.output


def test_cli_clear(cli, cache_dir: Path) -> None:
    _two_models(cache_dir)
    refused = cli("clear", "--cache-dir", str(cache_dir))
    assert refused.exit_code == 2 and "pass --yes" in refused.output
    unknown = cli("clear", "--model", "nope", "--yes", "--cache-dir", str(cache_dir))
    assert unknown.exit_code == 2 and "no model 'nope'" in unknown.output
    result = cli("clear", "--model", "alpha", "--yes", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0 and "removed 30 vectors of alpha" in result.output
    result = cli("clear", "-y", "--cache-dir", str(cache_dir))
    assert result.exit_code == 0 and "removed 20 vectors" in result.output
    assert "empty" in cli("stats", "--cache-dir", str(cache_dir)).output


def test_cli_clear_without_yes_exits_2_through_main(cache_dir: Path) -> None:
    _two_models(cache_dir)
    code = "from embedgen.cli import main; main()"
    cmd = [sys.executable, "-c", code, "cache", "clear", "--cache-dir", str(cache_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and "pass --yes" in done.stderr
    with _open(cache_dir) as c:
        assert sum(s.entries for s in c.stats()) == 50


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_cli_clear_asks_on_a_terminal(cache_dir: Path) -> None:
    import pty

    _two_models(cache_dir)
    code = "from embedgen.cli import main; main()"
    for answer, remaining in ((b"n\n", 50), (b"y\n", 30)):
        leader, follower = pty.openpty()
        cmd = [sys.executable, "-c", code, "cache", "clear", "--model", "beta",
               "--cache-dir", str(cache_dir)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        os.write(leader, answer)
        seen = b""
        while True:  # bounded by the child exiting, which closes the terminal
            try:
                chunk = os.read(leader, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        os.close(leader)
        assert proc.wait(timeout=60) == (1 if answer == b"n\n" else 0), seen
        assert b"Remove the cached vectors of beta" in seen
        with _open(cache_dir) as c:
            assert sum(s.entries for s in c.stats()) == remaining


@pytest.mark.parametrize("module", ["embedgen.cli.cache_cmd", "embedgen.cache"])
def test_import_does_not_load_lmdb(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "from embedgen.cache import VectorCache, CacheAdmin, cache_keys, resolve_cache_dir\n"
        "print('lmdb' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_cache_imports_no_layer_above_it() -> None:
    """The cache sits below pipeline, budget and providers (#10): importing it loads none."""
    code = (
        "import sys, embedgen.cache, embedgen.cache.admin\n"
        "above = ('embedgen.pipeline', 'embedgen.budget', 'embedgen.providers', "
        "'embedgen.router', 'embedgen.engines', 'embedgen.cli')\n"
        "print(sorted(m for m in sys.modules if m.startswith(above)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from embedgen.cache import VectorCache, cache_keys, fingerprint_id

    fp = fingerprint_id("onnx|shared")
    c = VectorCache.open(sys.argv[1])
    c.register_model(fp, "onnx|shared", "shared", 16)
    c.put_many(fp, cache_keys(fp, ["committed"]), np.ones((1, 16), np.float32))

    def die_mid_write(txn):
        for key in cache_keys(fp, [f"lost-{i}" for i in range(1000)]):
            txn.put(key, np.ones(16, np.float32).tobytes(), db=c._shared.vectors)
        os.kill(os.getpid(), signal.SIGKILL)

    c._txn(die_mid_write, write=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_writer_killed_mid_transaction_leaves_a_usable_cache(cache_dir: Path) -> None:
    cmd = [sys.executable, "-c", _KILLED_WRITER, str(cache_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    fp = fingerprint_id("onnx|shared")
    with _open(cache_dir) as c:  # the dead writer's lock and reader slot are recovered
        assert c.get_many(fp, cache_keys(fp, ["committed"]))[0] is not None
        assert c.get_many(fp, cache_keys(fp, ["lost-0"])) == [None]
        assert c.put_many(fp, cache_keys(fp, ["next"]), _vectors(1)) == 1
        assert c.stats()[0].entries == 2 and c.verify().bad == 0
