"""The fallback chain over real loopback servers: random faults, outages, recovery."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedgen.errors import ConfigError, FatalProviderError, ProviderError
from embedgen.router import Member, Router
from tests.api_helpers import KEY, KEY_VARS_ALL, batch_of, expected, provider
from tests.api_servers import ApiServer


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS_ALL:
        monkeypatch.setenv(var, KEY)


def run_batches(p: Member | Router, batches: list[list[str]], workers: int = 8) -> np.ndarray:
    """What the pipeline does: a pool of workers, results kept in input order."""
    r = p if isinstance(p, Router) else Router([p])
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda t: r.embed(batch_of(r, t)), batches))
    return np.concatenate([r.vectors for r in results])


def test_random_mixed_failures_over_5000_chunks_embed_each_once() -> None:
    texts = [f"chunk number {i} of the corpus" for i in range(5000)]
    batches = [texts[i : i + 50] for i in range(0, len(texts), 50)]
    max_retries = 8
    with (
        ApiServer("openai", fault_rate=0.2, seed=7) as primary,
        ApiServer("azure", fault_rate=0.2, seed=8) as fallback,
    ):
        opts = {"max_retries": max_retries, "failure_threshold": 50, "max_concurrency": 8}
        a = provider("openai", primary, **opts)
        b = provider("azure", fallback, **opts)
        chain = Router([a, b])
        out = run_batches(chain, batches)
        assert out.shape == (5000, 8)
        np.testing.assert_allclose(out, expected(primary, texts), rtol=1e-6)
        for server in (primary, fallback):
            assert max(server.state.attempts.values(), default=0) <= max_retries + 1
        failed = [r for r in primary.records if r.status != 200 or r.fault is not None]
        assert len(failed) > 10  # the faults really happened (about 20 of 100 first tries)
        served = primary.ok_requests() + fallback.ok_requests()
        assert served == len(batches)
        sa, sb = a.stats(), b.stats()
        assert sa.batches + sb.batches == len(batches)
        # A request can die on a connection the server has just dropped, before it is read.
        assert sa.retries > 0 and sa.requests >= len(primary.records)
        assert sa.tokens + sb.tokens == sum(primary.state.count_tokens(t) for t in texts)


def test_provider_directly_with_random_failures() -> None:
    texts = [f"direct {i}" for i in range(1000)]
    batches = [texts[i : i + 25] for i in range(0, len(texts), 25)]
    with ApiServer("voyage", fault_rate=0.2, seed=3) as server:
        p = provider("voyage", server, max_retries=8, failure_threshold=50, max_concurrency=4)
        out = run_batches(p, batches, workers=4)
        np.testing.assert_allclose(out, expected(server, texts), rtol=1e-6)
        assert max(server.state.attempts.values()) <= 9
        assert server.ok_requests() == len(batches)


def test_primary_down_the_run_completes_on_the_fallback() -> None:
    texts = [f"t {i}" for i in range(200)]
    batches = [texts[i : i + 10] for i in range(0, 200, 10)]
    with ApiServer("openai", down="503") as primary, ApiServer("azure") as fallback:
        a = provider("openai", primary, failure_threshold=3, recovery_timeout=60)
        b = provider("azure", fallback)
        out = run_batches(Router([a, b]), batches, workers=4)
        np.testing.assert_allclose(out, expected(fallback, texts), rtol=1e-6)
        assert a.breaker.state == "open" and a.stats().breaker_openings == 1
        # Once open, the primary gets no more traffic.
        assert len(primary.records) <= 3 + 4 * (a.settings.max_retries + 1)
        assert b.stats().batches >= len(batches) - 4


def test_primary_unreachable_falls_back() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with ApiServer("openai") as live, ApiServer("azure") as fallback:
        a = provider("openai", live, base_url=f"http://127.0.0.1:{port}/v1", failure_threshold=2)
        b = provider("azure", fallback)
        chain = Router([a, b])
        r = chain.embed(batch_of(chain, ["x", "y"]))
        np.testing.assert_allclose(r.vectors, expected(fallback, ["x", "y"]), rtol=1e-6)
        assert a.stats().failures == 2 and a.breaker.state == "open"
        assert r.models is None


def test_primary_recovering_mid_run_gets_traffic_back() -> None:
    with ApiServer("openai", down="reset") as primary, ApiServer("azure") as fallback:
        a = provider(
            "openai", primary, failure_threshold=2, recovery_timeout=0.3, success_threshold=2
        )
        b = provider("azure", fallback)
        chain = Router([a, b])
        for i in range(5):
            chain.embed(batch_of(chain, [f"early {i}"]))
        assert a.breaker.state == "open"
        early_primary = len(primary.records)
        primary.state.down = None  # the primary comes back
        time.sleep(0.35)
        assert a.breaker.state == "half_open"
        for i in range(10):
            chain.embed(batch_of(chain, [f"late {i}"]))
        assert a.breaker.state == "closed"
        assert primary.ok_requests() == 10
        assert len(primary.records) == early_primary + 10
        assert b.stats().batches == 5
        assert a.stats().breaker_openings == 1


def test_fatal_errors_are_not_hidden_by_the_fallback() -> None:
    with ApiServer("openai") as primary, ApiServer("azure") as fallback:
        chain = Router([provider("openai", primary), provider("azure", fallback)])
        primary.fail_next("401")
        with pytest.raises(FatalProviderError, match="HTTP 401"):
            chain.embed(batch_of(chain, ["x"]))
        assert fallback.records == []


def test_all_members_failing_is_a_provider_error() -> None:
    with ApiServer("openai", down="503") as s1, ApiServer("azure", down="503") as s2:
        a = provider("openai", s1, max_retries=1, failure_threshold=100)
        b = provider("azure", s2, max_retries=1, failure_threshold=100)
        chain = Router([a, b])
        with pytest.raises(ProviderError, match="every provider failed: openai: gave up") as info:
            chain.embed(batch_of(chain, ["x"]))
        assert "azure: gave up after 2 attempts" in str(info.value)
        assert len(s1.records) == 2 and len(s2.records) == 2


def test_all_breakers_open_waits_for_a_probe_then_succeeds() -> None:
    with ApiServer("openai", down="503") as s1, ApiServer("azure") as s2:
        a = provider("openai", s1, max_retries=0, failure_threshold=1, recovery_timeout=0.2)
        chain = Router([a])
        with pytest.raises(ProviderError):
            chain.embed(batch_of(chain, ["x"]))
        assert a.breaker.state == "open"
        s1.state.down = None
        r = chain.embed(batch_of(chain, ["x"]))  # waits ~0.2 s for the half-open
        np.testing.assert_allclose(r.vectors, expected(s1, ["x"]), rtol=1e-6)
        assert len(s2.records) == 0


def test_members_must_share_a_space() -> None:
    with ApiServer("openai") as s1, ApiServer("voyage", model="voyage-3.5") as s2:
        a, b = provider("openai", s1), provider("voyage", s2)
        with pytest.raises(ConfigError, match="different spaces.*allow_mixed_models"):
            Router([a, b])
        with pytest.raises(ConfigError, match="one vector size"):
            Router([a, provider("azure", s1, dimensions=16)])


def test_mixed_models_record_the_model_of_each_row() -> None:
    with ApiServer("openai", down="503") as s1, ApiServer("voyage", model="voyage-3.5") as s2:
        a = provider("openai", s1, failure_threshold=1)
        b = provider("voyage", s2)
        chain = Router([a, b], allow_mixed_models=True)
        assert chain.info.space.startswith("mixed:")
        r = chain.embed(batch_of(chain, ["x", "y"]))
        assert r.models == ["voyage-3.5", "voyage-3.5"]
        np.testing.assert_allclose(r.vectors, expected(s2, ["x", "y"]), rtol=1e-6)
        s1.state.down = None
        time.sleep(0.25)
        r = chain.embed(batch_of(chain, ["z"]))
        assert r.models == ["text-embedding-3-small"]


def test_chain_info_is_the_strictest_of_its_members() -> None:
    with ApiServer("openai") as s1, ApiServer("cohere") as s2:
        a = provider("openai", s1)
        b = provider("cohere", s2, space=a.info.space)
        chain = Router([a, b])
        assert chain.info.max_batch_inputs == 96
        assert chain.info.max_tokens == min(a.info.max_tokens, b.info.max_tokens)
        assert chain.info.fingerprint == a.info.fingerprint
        assert chain.tokenizer() is a.tokenizer()
