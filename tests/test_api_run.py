"""``embedgen run`` against loopback API servers, through the config file and the CLI.

These need the lead's wiring: ``embedgen.config.ProviderConfig`` accepting the API kinds
and ``embedgen.router.build`` building the run's router over ``build_api_provider``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embedgen.cli import app
from tests.api_servers import ApiServer, vector_for

runner = CliRunner()
KEY = "sk-run-test-KEY-0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)


def write_config(
    path: Path, primary: ApiServer, fallback: ApiServer | None = None, **extra: object
) -> Path:
    opts = {
        "dimensions": 8,
        "timeout": 0.4,
        "max_retries": 4,
        "backoff_base": 0.001,
        "backoff_max": 0.01,
        "failure_threshold": 4,
        "recovery_timeout": 0.2,
        "max_batch_inputs": 16,
        **extra,
    }
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in opts.items())
    names = ["openai"] + (["azure"] if fallback else [])
    text = f'[run]\nproviders = {names!r}\nlog_file = "{path.parent / "run.log"}"\n'.replace(
        "'", '"'
    )
    text += f'\n[providers.openai]\nkind = "openai"\nbase_url = "{primary.url}/v1"\n{body}'
    if fallback:
        text += (
            f'\n[providers.azure]\nkind = "azure"\nbase_url = "{fallback.url}"\n'
            f'deployment = "emb"\n{body}'
        )
    path.write_text(text, "utf-8")
    return path


def corpus(write_parquet, n: int) -> Path:
    return write_parquet(
        {"id": list(range(n)), "text": [f"document {i} says hello" for i in range(n)]}
    )


def run(src: Path, cfg: Path, out: Path):
    return runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out), "--quiet"])


def check_output(out: Path, server: ApiServer, n: int) -> None:
    table = pq.read_table(out)
    assert table.num_rows == n
    assert sorted(table.column("id").to_pylist()) == list(range(n))
    vecs = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    want = np.stack(
        [vector_for(t, 8, server.state.model) for t in table.column("text").to_pylist()]
    )
    np.testing.assert_allclose(vecs, want, rtol=1e-5)


@pytest.mark.parametrize(
    "fault", ["429", "503", "slow", "drop", "reset", "malformed", "count", "nan"]
)
def test_run_completes_under_each_fault(fault: str, write_parquet, tmp_path: Path) -> None:
    with ApiServer("openai", key=KEY, slow_seconds=0.8) as server:
        server.fail_next(fault, fault)
        src = corpus(write_parquet, 40)
        out = tmp_path / "out.parquet"
        result = run(src, write_config(tmp_path / "c.toml", server), out)
        assert result.exit_code == 0, (result.output, result.exception)
        check_output(out, server, 40)


@pytest.mark.parametrize(("fault", "text"), [("401", "HTTP 401"), ("400", "HTTP 400")])
def test_run_fails_fast_on_401_and_400(
    fault: str, text: str, write_parquet, tmp_path: Path
) -> None:
    with ApiServer("openai", key=KEY) as server:
        server.fail_next(fault)
        out = tmp_path / "out.parquet"
        result = run(corpus(write_parquet, 5), write_config(tmp_path / "c.toml", server), out)
        assert result.exit_code == 1
        assert text in str(result.exception) + result.output
        assert len(server.records) == 1
        assert not out.exists()


def test_run_with_random_failures_embeds_every_chunk_once(write_parquet, tmp_path: Path) -> None:
    with (
        ApiServer("openai", key=KEY, fault_rate=0.2, seed=11) as a,
        ApiServer("azure", key=KEY) as b,
    ):
        cfg = write_config(
            tmp_path / "c.toml", a, b, max_retries=8, failure_threshold=50, max_batch_inputs=50
        )
        out = tmp_path / "out.parquet"
        result = run(corpus(write_parquet, 5000), cfg, out)
        assert result.exit_code == 0, (result.output, result.exception)
        check_output(out, a, 5000)
        assert max(a.state.attempts.values()) <= 9


def test_run_with_the_primary_down_completes_on_the_fallback(write_parquet, tmp_path: Path) -> None:
    with ApiServer("openai", key=KEY, down="503") as a, ApiServer("azure", key=KEY) as b:
        out = tmp_path / "out.parquet"
        result = run(corpus(write_parquet, 100), write_config(tmp_path / "c.toml", a, b), out)
        assert result.exit_code == 0, (result.output, result.exception)
        check_output(out, b, 100)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_key_is_in_no_output_log_or_cache(write_parquet, tmp_path: Path) -> None:
    collect = _Collect()
    loggers = [logging.getLogger(n) for n in ("embedgen", "httpx", "httpcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(collect)
        lg.setLevel(logging.DEBUG)
    try:
        with ApiServer("openai", key=KEY) as a, ApiServer("azure", key=KEY) as b:
            a.fail_next("500", "reset", "malformed", "429")
            out = tmp_path / "out.parquet"
            cfg = write_config(tmp_path / "c.toml", a, b)
            args = ["run", str(corpus(write_parquet, 60)), "-c", str(cfg), "-o", str(out)]
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (result.output, result.exception)
            a.state.key = "another-key-entirely-000"  # the server now echoes a bad key
            args[1] = str(corpus(write_parquet, 61))
            args[-1] = str(tmp_path / "out2.parquet")
            failed = runner.invoke(app, args)
            assert failed.exit_code == 1, (failed.output, failed.exception)
            assert a.records[0].headers["Authorization"] == f"Bearer {KEY}"
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(collect)
            lg.setLevel(level)
    assert len(collect.lines) > 5
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert out in files
    for p in files:  # output, corpus, config, and the cache and run log under tmp_path
        assert KEY.encode() not in p.read_bytes(), p
    texts = [result.output, failed.output, str(failed.exception), repr(failed.exception)]
    assert "HTTP 401" in " ".join(texts)
    for text in texts + collect.lines:
        assert KEY not in text


def test_repeated_429s_without_configured_limits_slow_down_instead_of_failing(
    write_parquet, tmp_path: Path
) -> None:
    # A server that allows 8 requests per 2 s window and answers the rest with 429 and a
    # Retry-After far shorter than the window: retrying on its schedule fails every batch.
    with ApiServer(
        "openai", key=KEY, window_limit=8, window_seconds=2.0, window_retry_after="0.05"
    ) as server:
        cfg = write_config(tmp_path / "c.toml", server, max_batch_inputs=1, max_retries=3)
        out = tmp_path / "out.parquet"
        result = run(corpus(write_parquet, 30), cfg, out)
        assert result.exit_code == 0, (result.output, result.exception)
        check_output(out, server, 30)
        limited = sum(1 for r in server.records if r.status == 429)
        assert server.ok_requests() == 30
        assert limited < 3 * 30, limited  # it backed off rather than hammering the window


def test_without_configured_limits_a_run_learns_a_fixed_window_and_runs_near_it(
    write_parquet, tmp_path: Path
) -> None:
    """20 requests per 6 s window (200/min), refused beyond it with a Retry-After of 1 s:
    halving on every refusal while the window is closed left the rate far below the
    limit when it opened again (0.6 of it); the rate of whole cycles is learned instead."""
    with ApiServer(
        "openai", key=KEY, window_limit=20, window_seconds=6.0, window_retry_after="1"
    ) as server:
        cfg = tmp_path / "c.toml"  # the defaults: no limits, retries or backoff configured
        cfg.write_text(
            '[run]\nproviders = ["openai"]\n\n[providers.openai]\nkind = "openai"\n'
            f'base_url = "{server.url}/v1"\ndimensions = 8\nmax_batch_inputs = 16\n'
        )
        out = tmp_path / "out.parquet"
        result = run(corpus(write_parquet, 960), cfg, out)  # 60 requests of 16
        assert result.exit_code == 0, (result.output, result.exception)
        check_output(out, server, 960)
        records = server.records
    ok = [r.at for r in records if r.status == 200]
    assert len(ok) == 60
    span = max(ok) - min(r.at for r in records)
    # on a quiet machine 1.1 to 1.3 of the limit; a loaded CI host once gave 0.62, so this
    # end-to-end check is loose and test_api_limits checks the learned rate on a fake clock
    assert len(ok) / span * 60 >= 0.5 * 200, (span, len(records))


@pytest.mark.parametrize(
    ("setting", "hint"),
    [("dim = 8", "set `dim = 64`"), ("dimensions = 8", "set `dimensions = 64`")],
)
def test_a_server_of_another_vector_size_stops_at_once_as_a_config_error(
    setting: str, hint: str, write_parquet, tmp_path: Path
) -> None:
    """A wrong vector size is a setting: exit 2 on the first reply, no retries, no breaker."""
    with ApiServer("openai", key=KEY, dim=64, honour_dimensions=False) as server:
        cfg = write_config(tmp_path / "c.toml", server)
        cfg.write_text(cfg.read_text().replace("dimensions = 8", setting))
        out = tmp_path / "out.parquet"
        result = run(corpus(write_parquet, 5), cfg, out)
        assert result.exit_code == 2, (result.output, result.exception)
        msg = " ".join(result.output.split())
        assert "the server returns 64-d vectors" in msg and hint in msg, msg
        assert "Traceback" not in result.output
        assert len(server.records) == 1
        assert not out.exists()
