"""One member of a router: a provider with its reliability state and its statistics.

A member holds what is per provider and shared by every worker thread: token buckets
for requests/min and tokens/min, a circuit breaker, a cooldown after a 429, a cap on
requests in flight, and counters. It makes one request at a time through
:meth:`Member.attempt`; deciding whether to retry, fall back or stop is the router's.
A local model is a member without reliability settings: no limits, no breaker, one try.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from embedgen.errors import BreakerOpenError
from embedgen.providers.base import Batch, EmbedResult, Provider, ProviderInfo, TextTokenizer
from embedgen.providers.http_headers import RateLimitHeaders
from embedgen.router.adaptive import Aimd, Slots
from embedgen.router.limits import Bucket, Buckets, CircuitBreaker, Clock, OwnBuckets, RetryPolicy


@dataclass
class ProviderStats:
    """What one provider did during a run (the run summary prints these)."""

    name: str
    requests: int = 0
    """HTTP requests sent (first tries and retries)."""
    retries: int = 0
    failures: int = 0
    """Requests that failed (any reason)."""
    rate_limited: int = 0
    """Failures that were 429s."""
    breaker_openings: int = 0
    batches: int = 0
    """Batches embedded."""
    gave_up: int = 0
    """Batches that used up their retries here (a fallback may have taken them)."""
    tokens: int = 0
    """Tokens billed (the API's usage when reported, else our count)."""
    seconds: float = 0.0
    """Time spent in requests, summed over threads."""


@dataclass(frozen=True, kw_only=True)
class Reliability:
    """Limits, retries and breaker settings (from an API provider's config)."""

    rpm: int | None = None
    tpm: int | None = None
    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    success_threshold: int = 2
    max_concurrency: int = 4
    timeout: float = 60.0
    """The provider's request timeout (the router's bound on waiting for a dead provider)."""


def adaptive(settings: Reliability | None) -> bool:
    """Whether a member adapts to 429s on its own: an API provider with no rpm/tpm set."""
    return settings is not None and not settings.rpm and not settings.tpm


class Member:
    """A provider plus the reliability state the router consults for it."""

    def __init__(
        self,
        provider: Provider,
        settings: Reliability | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        buckets: Buckets | None = None,
    ) -> None:
        """``buckets``: where the rpm/tpm buckets live (this process's own by default; a Ray
        worker's are the run's global ones)."""
        self.provider = provider
        self.info: ProviderInfo = provider.info
        self.settings = settings
        self.clock, self.sleep = clock, sleep
        s = settings or Reliability(max_retries=0, failure_threshold=1 << 30, max_concurrency=1)
        self.retry = RetryPolicy(s.max_retries, s.backoff_base, s.backoff_max)
        self.breaker = CircuitBreaker(
            failure_threshold=s.failure_threshold,
            recovery_timeout=s.recovery_timeout,
            success_threshold=s.success_threshold,
            clock=clock,
        )
        self._buckets = buckets or OwnBuckets(clock)
        name = self.info.name
        self._requests: Bucket | None = self._buckets.bucket(name, "requests", s.rpm, sleep)
        self._tokens: Bucket | None = self._buckets.bucket(name, "tokens", s.tpm, sleep)
        self._slots = Slots(s.max_concurrency)
        self.aimd = Aimd(self._slots, clock=clock, sleep=sleep) if adaptive(settings) else None
        """Set when no rpm/tpm is configured: repeated 429s lower concurrency and rate."""
        self._lock = threading.Lock()
        self._stats = ProviderStats(self.info.name)
        self._cooldown_until = 0.0
        self.last_error: str | None = None
        """The last failure's message (for the warning when every breaker is open)."""

    @property
    def reliable(self) -> bool:
        """Whether this member has limits, retries and a breaker (an API provider)."""
        return self.settings is not None

    def tokenizer(self) -> TextTokenizer:
        return self.provider.tokenizer()

    def close(self) -> None:
        self.provider.close()

    # What the router asks ----------------------------------------------------------
    def available(self) -> bool:
        """Whether the breaker would let a batch through now."""
        return self.breaker.available()

    def seconds_until_available(self) -> float:
        return self.breaker.seconds_until_probe()

    def stats(self) -> ProviderStats:
        with self._lock:
            snap = dataclasses.replace(self._stats)
        snap.breaker_openings = self.breaker.openings
        return snap

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """One of ``max_concurrency`` request slots (fewer after 429s), held for a batch's tries."""
        self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def attempt(self, batch: Batch) -> EmbedResult:
        """One request: wait out a cooldown, claim the breaker, take from the buckets, send.

        Raises BreakerOpenError (nothing sent) or whatever the provider raised; the breaker
        and the counters are updated either way.
        """
        self._wait_cooldown()
        if not self.breaker.acquire():
            raise BreakerOpenError(
                f"{self.info.name}: circuit breaker is open after repeated failures"
                + (f" (last: {self.last_error})" if self.last_error else "")
            )
        if self.aimd is not None:
            self.aimd.before_request()
        if self._requests:
            self._requests.take(1)
        if self._tokens:
            self._tokens.take(batch.tokens)
        t0 = self.clock()
        try:
            result = self.provider.embed_batch(batch)
        except BaseException:
            self._count(t0, failed=True)
            raise
        self.observe(result.rate_limits)
        used = result.usage_tokens if result.usage_tokens is not None else batch.tokens
        if self._tokens and used > batch.tokens:
            self._tokens.reserve(used - batch.tokens)
        self.breaker.record_success()
        if self.aimd is not None:
            self.aimd.success()
        self._count(t0, failed=False, tokens=used)
        return result

    # What the router tells it ------------------------------------------------------
    def failed(self, message: str, *, fault: bool, rate_limited: bool = False) -> None:
        """Record a failed attempt: a fault counts toward the breaker, a 429 does not."""
        self.last_error = message
        with self._lock:
            self._stats.rate_limited += int(rate_limited)
        if rate_limited and self.aimd is not None:
            self.aimd.rate_limited()
        if fault:
            self.breaker.record_failure()
        else:
            self.breaker.release()

    def retried(self) -> None:
        with self._lock:
            self._stats.retries += 1

    def gave_up(self) -> None:
        with self._lock:
            self._stats.gave_up += 1

    def cool_down(self, retry_after: float | None) -> None:
        """Hold every request to this provider for ``retry_after`` seconds (after a 429)."""
        if retry_after is None:
            return
        until = self.clock() + min(retry_after, self.retry.max_retry_after)
        with self._lock:
            self._cooldown_until = max(self._cooldown_until, until)

    def observe(self, rl: object | None) -> None:
        """Tighten the buckets from a reply's rate-limit headers; a server limit starts one."""
        if not isinstance(rl, RateLimitHeaders):
            return
        with self._lock:
            name = self.info.name
            if self._requests is None and rl.limit_requests:
                self._requests = self._buckets.bucket(
                    name, "requests", rl.limit_requests, self.sleep
                )
            if self._tokens is None and rl.limit_tokens:
                self._tokens = self._buckets.bucket(name, "tokens", rl.limit_tokens, self.sleep)
            if self.aimd is not None and (self._requests or self._tokens):
                # the server states its limits: follow them rather than guess (AIMD off)
                self.aimd = None
                self._slots.set_limit(self._slots.ceiling)
        if self._requests:
            self._requests.tighten(
                limit=rl.limit_requests, remaining=rl.remaining_requests, reset_s=rl.reset_requests
            )
        if self._tokens:
            self._tokens.tighten(
                limit=rl.limit_tokens, remaining=rl.remaining_tokens, reset_s=rl.reset_tokens
            )

    # Internals ---------------------------------------------------------------------
    def _count(self, t0: float, *, failed: bool, tokens: int = 0) -> None:
        dt = max(0.0, self.clock() - t0)
        with self._lock:
            s = self._stats
            s.requests += 1
            s.seconds += dt
            if failed:
                s.failures += 1
            else:
                s.batches += 1
                s.tokens += tokens

    def _wait_cooldown(self) -> None:
        with self._lock:
            wait = self._cooldown_until - self.clock()
        if wait > 0:
            self.sleep(wait)

    def __repr__(self) -> str:
        return f"Member({self.provider!r})"
