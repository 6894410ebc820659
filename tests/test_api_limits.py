"""Token buckets, Retry-After parsing, backoff and the circuit breaker, on a driven clock."""

from __future__ import annotations

import email.utils
import random

import pytest

from embedgen.providers.http_headers import RateLimitHeaders, parse_duration, parse_retry_after
from embedgen.router.limits import CircuitBreaker, RetryPolicy, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_bucket_paces_to_the_rate_after_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)  # 10/s, 10 banked
    for _ in range(10):
        assert bucket.take(1) == 0
    start = clock.t
    for _ in range(50):
        bucket.take(1)
    assert clock.t - start == pytest.approx(5.0)


def test_bucket_lets_a_request_larger_than_its_capacity_through_by_waiting() -> None:
    clock = Clock()
    bucket = TokenBucket(60_000, clock=clock, sleep=clock.sleep)  # 1000 tokens/s
    assert bucket.take(3000) == pytest.approx(2.0)
    assert bucket.take(1000) == pytest.approx(1.0)


def test_bucket_tightens_from_headers_but_never_loosens() -> None:
    clock = Clock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)
    bucket.tighten(limit=6000, remaining=None, reset_s=None)
    assert bucket.rate == pytest.approx(10.0)
    bucket.tighten(limit=300, remaining=None, reset_s=None)
    assert bucket.rate == pytest.approx(5.0)
    bucket.tighten(limit=None, remaining=0, reset_s=2.0)
    assert bucket.take(1) == pytest.approx(2.0 + 0.2)


def test_parse_duration_reads_openai_reset_values() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after({"Retry-After": "3"}, now) == 3.0
    assert parse_retry_after({"retry-after": date}, now) == pytest.approx(7.0)
    assert (
        parse_retry_after({"Retry-After": email.utils.formatdate(now - 9, usegmt=True)}, now) == 0
    )
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}, now) == 0.25
    assert parse_retry_after({"Retry-After": "tomorrow-ish"}, now) is None
    assert parse_retry_after({}, now) is None


def test_rate_limit_headers_parse() -> None:
    rl = RateLimitHeaders.parse(
        {
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-reset-requests": "20ms",
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-tokens": "999000",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert rl is not None
    assert (rl.limit_requests, rl.remaining_requests) == (3000, 2999)
    assert rl.reset_requests == pytest.approx(0.02) and rl.reset_tokens == 360.0
    assert RateLimitHeaders.parse({"content-type": "application/json"}) is None


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_retries=10, base=0.5, cap=4.0)
    rng = random.Random(1)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 4.0)]:
        delays = [policy.delay(retry, None, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # full jitter spans the range
    assert 7.0 <= policy.delay(1, 7.0, rng) <= 7.05
    assert policy.delay(1, 10_000.0, rng) <= policy.max_retry_after + 0.05


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, recovery_timeout=10, success_threshold=2, clock=clock)
    for _ in range(2):
        assert b.acquire()
        b.record_failure()
    b.record_success()  # resets the consecutive count
    for _ in range(3):
        assert b.acquire()
        b.record_failure()
    assert b.state == "open" and b.openings == 1
    assert not b.acquire() and not b.available()
    assert b.seconds_until_probe() == pytest.approx(10)
    clock.t += 10
    assert b.state == "half_open"
    assert b.acquire() and b.acquire()
    assert not b.acquire()  # at most success_threshold probes at once
    b.record_success()
    assert b.state == "half_open"
    b.record_success()
    assert b.state == "closed"


def test_a_failed_probe_reopens_the_breaker() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, recovery_timeout=5, success_threshold=1, clock=clock)
    b.acquire()
    b.record_failure()
    clock.t += 5
    assert b.acquire()
    b.record_failure()
    assert b.state == "open" and b.openings == 2
    clock.t += 4.9
    assert not b.available()


def _fixed_window_run(learn: bool) -> float:
    """Requests per minute a client gets from a server allowing 20 per 6 s window (200 a
    minute) and refusing beyond with a Retry-After of 1 s: the adaptive limiter on a fake
    clock, one request at a time, 0.05 s per exchange, until 120 requests passed."""
    from embedgen.router.adaptive import Aimd, Slots

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    aimd = Aimd(Slots(1), clock=lambda: now[0], sleep=sleep)
    if not learn:  # the rule before cycles were learned: halve, then creep back
        aimd._learn = lambda t: None  # type: ignore[method-assign]
    passed, used = 0, {}
    first = None
    while passed < 120:
        aimd.before_request()
        window = int(now[0] // 6.0)
        now[0] += 0.05
        if used.get(window, 0) < 20:
            used[window] = used.get(window, 0) + 1
            first = now[0] if first is None else first
            passed += 1
            aimd.success()
        else:
            aimd.rate_limited()
            sleep(1.0)  # Retry-After
    assert first is not None
    return passed / (now[0] - first) * 60.0


def test_the_adaptive_limiter_learns_a_fixed_window_and_runs_near_its_rate() -> None:
    """Deterministic twin of the loopback test in test_api_run: the whole cycle's rate is
    learned (at least 0.9 of the 200 a minute allowed), where halving and creeping back
    stays well below it."""
    learned, halved = _fixed_window_run(True), _fixed_window_run(False)
    assert learned >= 0.9 * 200, (learned, halved)  # 216 a minute
    assert halved < 0.85 * 200, (learned, halved)  # 167 a minute: the test can fail
