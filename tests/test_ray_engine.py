"""``embedgen run --engine ray`` on a local Ray instance: the local engine's rows, a dataset
directory, resume after kill -9, global API limits, and the missing extra."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.cache_corpus import cache_written

ray = pytest.importorskip("ray")

from embedgen.engines import embed_corpus as embed  # noqa: E402

ROW_COLUMNS = ["id", "chunk", "char_start", "char_end", "tokens", "text"]


@pytest.fixture(autouse=True)
def ray_session():
    """A local Ray instance per test (the engine joins it, never stops it), so no actor a
    test leaves behind holds CPUs the next test's workers wait for; yields its session
    folder, where Ray keeps its logs."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield Path(ctx.address_info["session_dir"])
    ray.shutdown()


def _corpus(write_parquet, n: int = 120) -> Path:
    texts = [
        f"Document {i} is about topic {i % 7}. " + "It has a longer body of words. " * (i % 9)
        for i in range(n)
    ]
    texts[5] = ""
    texts[9] = None  # type: ignore[call-overload]
    return write_parquet({"doc": [f"d{i:04d}" for i in range(n)], "text": texts})


def _vectors(table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def _meta(path: Path) -> dict:
    meta = json.loads(pq.read_schema(path).metadata[b"embedgen"])
    meta.pop("created")
    return meta


def test_rows_equal_the_local_engine(tmp_path: Path, write_parquet) -> None:
    src = _corpus(write_parquet)
    opts = {"max_tokens": 24, "overlap": 4, "id_column": "doc", "sort_window": 16, "quiet": True}
    local = embed(src, tmp_path / "local.parquet", **opts)
    rayed = embed(src, tmp_path / "ray.parquet", engine="ray", workers=2, **opts)
    a, b = pq.read_table(tmp_path / "ray.parquet"), pq.read_table(tmp_path / "local.parquet")
    assert a.schema == b.schema
    assert _meta(tmp_path / "ray.parquet") == _meta(tmp_path / "local.parquet")
    for col in ROW_COLUMNS:
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    cos = (_vectors(a) * _vectors(b)).sum(axis=1)
    assert cos.min() >= 0.99999
    assert (rayed.documents, rayed.chunks, rayed.skipped) == (
        local.documents, local.chunks, local.skipped,
    )  # fmt: skip
    assert rayed.chunks > 120  # several windows, several chunks per long document
    assert rayed.cached == rayed.chunks  # the local run filled the cache
    skipped = (tmp_path / "ray.skipped.jsonl").read_text().splitlines()
    assert skipped == (tmp_path / "local.skipped.jsonl").read_text().splitlines()


def test_directory_output_is_the_same_rows_as_a_dataset(tmp_path: Path, write_parquet) -> None:
    src = _corpus(write_parquet, 60)
    opts = {"max_tokens": 24, "sort_window": 16, "quiet": True, "use_cache": False}
    embed(src, tmp_path / "local.parquet", **opts)
    out = tmp_path / "ds"
    summary = embed(src, f"{out}/", engine="ray", workers=2, **opts)
    desc = json.loads((out / "_embedgen.json").read_text())
    shards = sorted(p.name for p in out.glob("part-*.parquet"))
    assert [s["file"] for s in desc["shards"]] == shards and len(shards) >= 4
    assert desc["rows"] == summary.chunks
    import pyarrow as pa

    a = pa.concat_tables(pq.read_table(out / name) for name in shards)
    b = pq.read_table(tmp_path / "local.parquet")
    assert a.schema == b.schema
    for col in ROW_COLUMNS:
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col


def test_kill_9_then_rerun_takes_finished_chunks_from_the_cache(
    tmp_path: Path, write_parquet
) -> None:
    texts = [f"sentence {i} " + "with some more words to embed " * (i % 12) for i in range(6000)]
    src = write_parquet({"text": texts})
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "embedgen", "run", str(src), "-o", str(out),
           "--engine", "ray", "--workers", "2", "--max-tokens", "32"]  # fmt: skip
    # its own Ray instance (ray.init would join the session's through /tmp/ray), so the
    # kill takes the driver and every Ray process it started
    env = {**os.environ, "RAY_ADDRESS": "local"}
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stderr=log, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    cache = Path(os.environ["EMBEDGEN_CACHE_DIR"])
    # kill once the workers have committed some chunks (the cache file has grown)
    while time.monotonic() < deadline and proc.poll() is None:
        if cache_written(cache) > 512 * 1024:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    proc.wait()
    log.close()
    assert not out.exists(), "the run finished before it could be killed"
    assert any(cache.rglob("*.mdb"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    m = re.search(
        r"chunks:\s+([\d,]+) \(([\d,]+) cached, ([\d,]+) computed, ([\d,]+) duplicate\)",
        done.stderr,
    )
    assert m, done.stderr
    total, cached, computed, duplicate = (int(x.replace(",", "")) for x in m.groups())
    assert cached > 0 and computed < total and cached + computed + duplicate == total
    local = embed(src, tmp_path / "local.parquet", max_tokens=32, quiet=True)
    assert local.cached == local.chunks == total  # everything the Ray runs embedded is cached
    a, b = pq.read_table(out), pq.read_table(tmp_path / "local.parquet")
    for col in ROW_COLUMNS:
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col


def test_missing_extra_is_a_usage_error(tmp_path: Path, write_parquet) -> None:
    src = _corpus(write_parquet, 12)
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow.parent))
    res = subprocess.run(
        [sys.executable, "-m", "embedgen", "run", str(src), "--engine", "ray", "-q"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "pip install 'embedgen[ray]'" in res.stderr


def test_cli_help_does_not_import_ray() -> None:
    code = "import sys, embedgen.cli, embedgen.engines; print('ray' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "False"


API_KEY = "sk-ray-limits-0123456789abcdef"


def _api_config(tmp_path: Path, server, *, rpm: int | None = None, price: float = 0.0) -> Path:
    cfg = tmp_path / "embedgen.toml"
    cfg.write_text(
        '[run]\nproviders = ["openai"]\n\n'
        f'[providers.openai]\nkind = "openai"\nbase_url = "{server.url}/v1"\ndimensions = 8\n'
        f"max_batch_inputs = 8\nmax_concurrency = 4\nmax_retries = 0\nprice_per_mtok = {price}\n"
        + (f"rpm = {rpm}\n" if rpm else ""),
        "utf-8",
    )
    return cfg


def test_two_workers_share_one_rate_limit(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server allows 1.5x the config's rpm (slack for scheduling jitter on a loaded
    machine) and answers 429 beyond it. Two workers with a bucket each would send 2x."""
    from tests.api_servers import ApiServer

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    src = write_parquet({"text": [f"short text number {i}" for i in range(200)]})
    with ApiServer("openai", key=API_KEY, rpm=360) as server:
        cfg = _api_config(tmp_path, server, rpm=240)
        summary = embed(src, tmp_path / "out.parquet", config=cfg, engine="ray", workers=2,
                        quiet=True, use_cache=False)  # fmt: skip
        records = server.records
    # a bucket per worker sends 8 at once and 8 a second: several 429s at once; the shared
    # bucket none, but a loaded host (CI) once bunched two paced requests into one arrival
    limited = [r for r in records if r.status != 200]
    assert len(limited) <= 1 and all(r.status == 429 for r in limited), limited
    assert len(records) == 25 + len(limited) and summary.computed == 200
    stats = summary.provider_stats["openai"]
    assert stats.requests == len(records) and stats.batches == 25
    assert stats.failures == stats.rate_limited == len(limited)
    # 240/min with a one-second burst: 4 at once, then 4 a second
    span = max(r.at for r in records) - min(r.at for r in records)
    assert span >= (25 - 4) / 4 * 0.9


def test_budget_cap_holds_across_workers(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedgen.budget.ledger import Ledger, ledger_path, month_of
    from embedgen.budget.prices import PICO, cost_pico
    from embedgen.errors import BudgetExceeded
    from tests.api_servers import ApiServer

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    price = 2000.0
    texts = [f"document {i} talks about {'several things ' * (i % 6)}topic {i}" for i in range(240)]
    src = write_parquet({"text": texts})
    with ApiServer("openai", key=API_KEY) as server:
        cfg = _api_config(tmp_path, server, price=price)
        count = server.state.count_tokens
        full = cost_pico(sum(count(t) for t in texts), price)
        cap = full / 3 / PICO
        with pytest.raises(BudgetExceeded, match="stopped on budget"):
            embed(src, tmp_path / "out.parquet", config=cfg, engine="ray", workers=2,
                  quiet=True, max_cost_usd=cap)  # fmt: skip
        billed = sum(count(t) for r in server.records if r.status == 200 for t in r.texts)
    spent = sum(Ledger(ledger_path()).read().month_spend(month_of()).values())
    assert 0 < spent <= cap * PICO
    assert spent == cost_pico(billed, price)
    assert not (tmp_path / "out.parquet").exists()


def test_api_key_never_reaches_rays_session_folder(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch, ray_session: Path
) -> None:
    """Ray logs runtime environments (runtime_env_agent.log, readable by every user): the
    key reaches the workers in memory instead, and nothing under the session folder holds it."""
    from tests.api_servers import ApiServer

    key = "sk-SECRET-never-in-ray-logs-5f3a9c"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    src = write_parquet({"text": [f"short text number {i}" for i in range(40)]})
    with ApiServer("openai", key=key) as server:
        cfg = _api_config(tmp_path, server)
        summary = embed(src, tmp_path / "out.parquet", config=cfg, engine="ray", workers=2,
                        quiet=True, use_cache=False)  # fmt: skip
    assert summary.computed == 40
    found = [
        str(p)
        for p in ray_session.rglob("*")
        if p.is_file() and not p.is_socket() and key.encode() in p.read_bytes()
    ]
    assert found == []


def test_the_same_429_scenario_behaves_the_same_on_both_engines(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rpm configured: the member adapts to 429s (AIMD) on either engine, and each engine
    retries every 429 the server sent to the same rows."""
    from tests.api_servers import ApiServer

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    src = write_parquet({"text": [f"short text number {i}" for i in range(96)]})
    results = {}
    for engine in ("local", "ray"):
        with ApiServer("openai", key=API_KEY, rpm=120) as server:
            cfg = _api_config(tmp_path, server)
            cfg.write_text(cfg.read_text().replace("max_retries = 0", "max_retries = 8"))
            summary = embed(src, tmp_path / f"{engine}.parquet", config=cfg, engine=engine,
                            workers=1, quiet=True, use_cache=False)  # fmt: skip
            limited = sum(1 for r in server.records if r.status == 429)
        stats = summary.provider_stats["openai"]
        results[engine] = pq.read_table(tmp_path / f"{engine}.parquet")
        assert summary.computed == 96 and stats.failures == limited, engine
        assert limited > 0 and stats.rate_limited == limited, engine
    assert results["ray"].equals(results["local"].replace_schema_metadata(
        results["ray"].schema.metadata))  # fmt: skip


def test_a_ray_workers_members_adapt_like_local_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member built with the run's shared buckets and no rpm/tpm keeps AIMD through headers
    that state no limit (remote buckets once made it switch off at the first header)."""
    from embedgen.engines.ray_limits import SharedBuckets
    from embedgen.providers.api_factory import build_api_provider
    from embedgen.providers.http_headers import RateLimitHeaders
    from embedgen.router.build import reliability
    from embedgen.router.member import Member
    from tests.api_helpers import api_config
    from tests.api_servers import ApiServer

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with ApiServer("openai", key=API_KEY) as server:
        cfg = api_config("openai", server)
    for buckets in (None, SharedBuckets(actor=None)):
        m = Member(build_api_provider("openai", cfg), reliability(cfg), buckets=buckets)
        assert m.aimd is not None
        m.observe(RateLimitHeaders(remaining_requests=3, reset_requests=1.0))
        assert m.aimd is not None, buckets
        m.close()


def test_batch_mode_under_ray_collects_at_the_batch_price(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mode = "batch"``: the pre-pass runs on the driver before the workers start; the
    workers find every vector in the cache and the ledger holds the batch price."""
    from embedgen.budget.ledger import Ledger, ledger_path, month_of
    from embedgen.budget.prices import cost_pico
    from tests.api_servers import vector_for
    from tests.batch_server import KEY, BatchServer

    price = 1000.0
    texts = [f"row {i} is about {'many things ' * (i % 4)}topic {i % 89}" for i in range(300)]
    src = write_parquet({"id": list(range(300)), "text": texts})
    with BatchServer() as server:
        cfg = tmp_path / "embedgen.toml"
        cfg.write_text(
            '[run]\nproviders = ["openai"]\n\n[providers.openai]\nkind = "openai"\n'
            f'mode = "batch"\nbase_url = "{server.url}/v1"\ndimensions = 8\n'
            "max_batch_inputs = 64\nbatch_poll = 0.001\nbatch_poll_max = 0.004\n"
            f"batch_price_per_mtok = {price}\nmax_retries = 4\nbackoff_base = 0.001\n",
            "utf-8",
        )
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        summary = embed(src, tmp_path / "out.parquet", config=cfg, engine="ray", workers=2,
                        id_column="id", quiet=True)  # fmt: skip
        billed = server.state.billed_tokens
        model = server.state.model
    assert summary.chunks == 300 and summary.cached == 300 and summary.computed == 0
    spent = Ledger(ledger_path()).read().month_spend(month_of())
    assert spent == {"openai": cost_pico(billed, price)} and billed > 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == list(range(300))
    got = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, np.stack([vector_for(t, 8, model) for t in texts]), rtol=1e-6)


def test_an_unchanged_rerun_under_ray_tokenizes_nothing(tmp_path: Path, write_parquet) -> None:
    """The document index works under Ray: chunk tasks rebuild known documents' chunks from
    their records, and the rows equal those of the first run."""
    src = _corpus(write_parquet, 80)
    opts = {"max_tokens": 24, "overlap": 4, "id_column": "doc", "sort_window": 16, "quiet": True}
    first = embed(src, tmp_path / "a.parquet", engine="ray", workers=2, **opts)
    assert first.tokenized == first.documents - first.skipped > 0
    again = embed(src, tmp_path / "b.parquet", engine="ray", workers=2, **opts)
    assert again.tokenized == 0 and again.cached == again.chunks == first.chunks
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    for col in ROW_COLUMNS:
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    local = embed(src, tmp_path / "c.parquet", **opts)  # the records serve the local engine too
    assert local.tokenized == 0 and local.chunks == first.chunks


def test_s3_in_and_out_under_ray_gives_the_local_rows(
    tmp_path: Path, write_parquet, s3_store
) -> None:
    """Chunk tasks read their units straight from the store (settings handed over in
    memory); a file and a dataset directory out to ``s3://`` read back equal to local."""
    src = _corpus(write_parquet, 60)
    s3_store.put_file(src, "ray-in/a.parquet")
    opts = {"max_tokens": 24, "id_column": "doc", "sort_window": 16, "quiet": True}
    local = embed(src, tmp_path / "local.parquet", **opts)
    one = embed(s3_store.uri("ray-in/"), s3_store.uri("ray-out/emb.parquet"), engine="ray",
                workers=2, **opts)  # fmt: skip
    assert one.chunks == local.chunks and one.skipped == local.skipped == 2
    ref = pq.read_table(tmp_path / "local.parquet")
    got = s3_store.read_table("ray-out/emb.parquet")
    for col in ROW_COLUMNS:
        assert got.column(col).to_pylist() == ref.column(col).to_pylist(), col
    stale = s3_store.put_file(src, "ray-ds/part-99999-000000.parquet")  # an earlier run's
    embed(s3_store.uri("ray-in/a.parquet"), s3_store.uri("ray-ds/"), engine="ray", workers=2,
          **opts)  # fmt: skip
    keys = s3_store.keys("ray-ds")
    assert stale.removeprefix(s3_store.uri("")) not in keys
    shards = [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-")]
    assert "ray-ds/_embedgen.json" in keys and "ray-ds/skipped.jsonl" in keys and shards
    import pyarrow as pa

    ds = pa.concat_tables(s3_store.read_table(k) for k in shards)
    for col in ROW_COLUMNS:
        assert ds.column(col).to_pylist() == ref.column(col).to_pylist(), col


def test_ray_counts_cached_duplicate_and_computed_as_the_local_engine(
    tmp_path: Path, write_parquet
) -> None:
    texts = [f"text number {i % 5} about the same few things" for i in range(40)]
    src = write_parquet({"text": texts})
    ray_run = embed(src, tmp_path / "r.parquet", engine="ray", workers=1, quiet=True,
                    use_cache=False)  # fmt: skip
    local = embed(src, tmp_path / "l.parquet", quiet=True, use_cache=False)
    for s in (ray_run, local):
        assert (s.cached, s.computed, s.duplicate, s.chunks) == (0, 5, 35, 40)
