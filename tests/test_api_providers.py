"""Each hosted API protocol against its loopback server, and each fault it must survive."""

from __future__ import annotations

import time

import numpy as np
import pytest

from embedgen.errors import ConfigError, FatalProviderError, ProviderError
from tests.api_helpers import KEY, KEY_VARS_ALL, PROTOCOL, batch_of, expected, provider, route
from tests.api_servers import ApiServer

TEXTS = ["the quick brown fox", "jumps over the lazy dog", "héllo wörld 日本語", "ok"]


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS_ALL:
        monkeypatch.setenv(var, KEY)


@pytest.mark.parametrize("kind", list(PROTOCOL))
def test_each_protocol_embeds_in_order(kind: str) -> None:
    with ApiServer(PROTOCOL[kind]) as server:
        p = provider(kind, server)
        batch = batch_of(p, TEXTS)
        result = route(p).embed(batch)
        assert result.vectors.dtype == np.float32
        np.testing.assert_allclose(result.vectors, expected(server, TEXTS), rtol=1e-6)
        assert result.usage_tokens == sum(server.state.count_tokens(t) for t in TEXTS)
        (rec,) = server.records
        if kind == "azure":
            assert rec.headers.get("api-key") == KEY
            assert "Authorization" not in rec.headers
        else:
            assert rec.headers.get("Authorization") == f"Bearer {KEY}"
        assert p.info.dim == 8 and p.info.kind == kind
        assert KEY not in p.info.fingerprint
        p.close()


def test_bpe_counts_match_the_server() -> None:
    with ApiServer("openai") as server:
        p = provider("openai", server)
        batch = batch_of(p, TEXTS)
        result = route(p).embed(batch)
        assert result.usage_tokens == batch.tokens


FAULTS = ["429", "429-ms", "408", "500", "503", "slow", "drop", "reset"]
FAULTS += ["malformed", "count", "dim", "nan"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", ["openai", "azure", "voyage", "cohere"])
def test_each_fault_is_retried_and_never_output(kind: str, fault: str) -> None:
    with ApiServer(PROTOCOL[kind], slow_seconds=0.6) as server:
        p = provider(kind, server, timeout=0.3)
        server.fail_next(fault)
        result = route(p).embed(batch_of(p, TEXTS))
        np.testing.assert_allclose(result.vectors, expected(server, TEXTS), rtol=1e-6)
        assert np.isfinite(result.vectors).all()
        stats = p.stats()
        assert (stats.requests, stats.retries, stats.failures, stats.batches) == (2, 1, 1, 1)
        assert stats.rate_limited == int(fault.startswith("429"))
        assert server.ok_requests() == 1
        p.close()


def test_retry_after_http_date_is_honoured() -> None:
    with ApiServer("openai") as server:
        p = provider("openai", server)
        server.fail_next("429-date")
        route(p).embed(batch_of(p, TEXTS))
        # The date is two seconds ahead at one-second resolution: a wait of (1, 2] s.
        r0, r1 = server.records
        assert r1.at - r0.at >= 0.9
        assert p.stats().retries == 1


def test_retry_after_seconds_is_honoured() -> None:
    with ApiServer("openai", retry_after="1") as server:
        p = provider("openai", server)
        server.fail_next("429")
        route(p).embed(batch_of(p, TEXTS))
        r0, r1 = server.records
        assert r1.at - r0.at >= 0.95


def test_gives_up_after_max_retries() -> None:
    with ApiServer("openai") as server:
        p = provider("openai", server, max_retries=3, failure_threshold=100)
        server.fail_next(*["500"] * 10)
        with pytest.raises(ProviderError, match="gave up after 4 attempts: .*HTTP 500"):
            route(p).embed(batch_of(p, TEXTS))
        assert len(server.records) == 4
        assert p.stats().gave_up == 1


@pytest.mark.parametrize("kind", list(PROTOCOL))
def test_bad_key_fails_fast_with_the_api_message(kind: str, monkeypatch) -> None:
    var = {
        "openai": "OPENAI_API_KEY",
        "azure": "AZURE_OPENAI_API_KEY",
        "openai_compatible": "EG_COMPAT_KEY",
        "mistral": "MISTRAL_API_KEY",
        "voyage": "VOYAGE_API_KEY",
        "cohere": "CO_API_KEY",
    }[kind]
    wrong = "sk-wrong-key-9876543210"
    monkeypatch.setenv(var, wrong)
    with ApiServer(PROTOCOL[kind]) as server:
        p = provider(kind, server)
        with pytest.raises(FatalProviderError) as info:
            route(p).embed(batch_of(p, TEXTS))
        msg = str(info.value)
        assert "HTTP 401" in msg and "Incorrect API key provided" in msg and var in msg
        assert wrong not in msg and wrong not in repr(info.value)
        assert len(server.records) == 1


def test_bad_request_fails_fast() -> None:
    with ApiServer("openai") as server:
        p = provider("openai", server)
        server.fail_next("400")
        with pytest.raises(FatalProviderError, match="HTTP 400: input is invalid"):
            route(p).embed(batch_of(p, TEXTS))
        assert len(server.records) == 1
        assert p.breaker.state == "closed"


def test_wrong_deployment_is_a_404_naming_what_to_check() -> None:
    with ApiServer("azure") as server:
        p = provider("azure", server, deployment="nope")
        with pytest.raises(FatalProviderError, match="HTTP 404.*check base_url"):
            route(p).embed(batch_of(p, TEXTS))


def test_missing_key_variable_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("VOYAGE_API_KEY")
    with ApiServer("voyage") as server, pytest.raises(ConfigError, match="VOYAGE_API_KEY") as info:
        provider("voyage", server)
    assert info.value.exit_code == 2


def test_compatible_server_without_key() -> None:
    with ApiServer("openai", key=None) as server:
        p = provider("openai_compatible", server, api_key_env=None)
        route(p).embed(batch_of(p, TEXTS))
        assert "Authorization" not in server.records[0].headers


def test_concurrent_requests_share_one_client() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ApiServer("openai") as server:
        p = provider("openai", server, max_concurrency=4)
        batches = [[f"text {i} {j}" for j in range(5)] for i in range(40)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda t: route(p).embed(batch_of(p, t)), batches))
        for texts, r in zip(batches, results, strict=True):
            np.testing.assert_allclose(r.vectors, expected(server, texts), rtol=1e-6)
        assert p.stats().requests == 40
        p.close()


def test_rate_limit_headers_start_a_bucket() -> None:
    # The client sets no rpm: the server's x-ratelimit headers must keep it under 10/s.
    with ApiServer("openai", rpm=600, rate_headers=True) as server:
        p = provider("openai", server, max_retries=10)
        for i in range(25):
            route(p).embed(batch_of(p, [f"t{i}"]))
        limited = sum(1 for r in server.records if r.status == 429)
        assert limited <= 2, limited
        assert p.stats().batches == 25


def test_configured_limits_keep_under_a_server_limiter() -> None:
    with ApiServer("openai", rpm=1200) as server:
        p = provider("openai", server, rpm=1200, max_retries=10)
        t0 = time.monotonic()
        for i in range(40):
            route(p).embed(batch_of(p, [f"t{i}"]))
        elapsed = time.monotonic() - t0
        limited = sum(1 for r in server.records if r.status == 429)
        assert limited <= 2, limited
        # 20 banked (1 s burst), then 20 per second.
        assert elapsed >= 0.8
