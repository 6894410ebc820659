"""The reliability layer: any Provider, wrapped with limits, retries, a breaker and stats.

One :class:`ReliableProvider` per configured provider, shared by all the pipeline's
worker threads: its token buckets, breaker, cooldown and in-flight cap are per
provider, not per thread. A batch is tried at most ``1 + max_retries`` times.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from embedgen.errors import FatalProviderError, ProviderError
from embedgen.providers.base import Batch, EmbedResult, Provider, ProviderInfo, TextTokenizer
from embedgen.providers.http_base import TransientProviderError
from embedgen.providers.limits import (
    CircuitBreaker,
    Clock,
    RateLimitHeaders,
    RetryPolicy,
    TokenBucket,
)
from embedgen.redact import redact

BudgetGate = Callable[[ProviderInfo, Batch], bool]


class BreakerOpenError(ProviderError):
    """The provider's circuit breaker is open: it is not being called for a while."""


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


class ReliableProvider(Provider):
    """Limits, retries, breaker and stats around one provider."""

    def __init__(
        self,
        inner: Provider,
        settings: Reliability,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner
        self.info = inner.info
        self.settings = settings
        self.retry = RetryPolicy(settings.max_retries, settings.backoff_base, settings.backoff_max)
        self.breaker = CircuitBreaker(
            failure_threshold=settings.failure_threshold,
            recovery_timeout=settings.recovery_timeout,
            success_threshold=settings.success_threshold,
            clock=clock,
        )
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._requests = (
            TokenBucket(settings.rpm, clock=clock, sleep=sleep) if settings.rpm else None
        )
        self._tokens = TokenBucket(settings.tpm, clock=clock, sleep=sleep) if settings.tpm else None
        self._inflight = threading.BoundedSemaphore(settings.max_concurrency)
        self._lock = threading.Lock()
        self._stats = ProviderStats(inner.info.name)
        self._cooldown_until = 0.0
        self.budget_gate: BudgetGate | None = None
        """The budget's extension point: set to a callable that says whether this
        provider's remaining budget covers a batch (see :meth:`can_afford`)."""
        if hasattr(inner, "on_rate_limits"):
            inner.on_rate_limits = self._tighten

    # Chain hooks -----------------------------------------------------------------------
    def available(self) -> bool:
        """Whether the breaker would let a batch through now."""
        return self.breaker.available()

    def seconds_until_available(self) -> float:
        return self.breaker.seconds_until_probe()

    def can_afford(self, batch: Batch) -> bool:
        """Whether this provider's budget covers ``batch``.

        The fallback chain asks this before sending a batch here. Without a budget
        (``budget_gate`` is None) every batch is affordable; the budget layer sets
        ``budget_gate`` to reserve cost and answer False when a cap would be exceeded.
        """
        return self.budget_gate is None or self.budget_gate(self.info, batch)

    def stats(self) -> ProviderStats:
        with self._lock:
            snap = dataclasses.replace(self._stats)
        snap.breaker_openings = self.breaker.openings
        return snap

    # The contract ----------------------------------------------------------------------
    def tokenizer(self) -> TextTokenizer:
        return self.inner.tokenizer()

    def close(self) -> None:
        self.inner.close()

    def embed_batch(self, batch: Batch) -> EmbedResult:
        with self._inflight:
            return self._embed(batch)

    def _embed(self, batch: Batch) -> EmbedResult:
        name = self.info.name
        last: ProviderError | None = None
        attempts = self.retry.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                with self._lock:
                    self._stats.retries += 1
                ra = last.retry_after if isinstance(last, TransientProviderError) else None
                self._sleep(self.retry.delay(attempt, ra, self._rng))
            self._wait_cooldown()
            if not self.breaker.acquire():
                raise BreakerOpenError(
                    f"{name}: circuit breaker is open after repeated failures"
                    + (f" (last: {last})" if last else "")
                )
            if self._requests:
                self._requests.take(1)
            if self._tokens:
                self._tokens.take(batch.tokens)
            t0 = self._clock()
            try:
                result = self.inner.embed_batch(batch)
            except FatalProviderError:
                self.breaker.release()
                self._count(t0, failed=True)
                raise
            except TransientProviderError as exc:
                last = exc
                self._count(t0, failed=True, limited=exc.status == 429)
                if exc.status == 429:
                    # Rate limiting is not a fault of the provider: back off, keep the breaker.
                    self.breaker.release()
                    self._start_cooldown(exc.retry_after)
                else:
                    self.breaker.record_failure()
                continue
            except ProviderError as exc:
                last = exc
                self._count(t0, failed=True)
                self.breaker.record_failure()
                continue
            self.breaker.record_success()
            used = result.usage_tokens if result.usage_tokens is not None else batch.tokens
            if self._tokens and used > batch.tokens:
                self._tokens.reserve(used - batch.tokens)
            self._count(t0, failed=False, tokens=used)
            return result
        with self._lock:
            self._stats.gave_up += 1
        raise ProviderError(redact(f"{name}: gave up after {attempts} attempts: {last}"))

    # Internals -------------------------------------------------------------------------
    def _count(self, t0: float, *, failed: bool, limited: bool = False, tokens: int = 0) -> None:
        dt = max(0.0, self._clock() - t0)
        with self._lock:
            s = self._stats
            s.requests += 1
            s.seconds += dt
            if failed:
                s.failures += 1
                s.rate_limited += int(limited)
            else:
                s.batches += 1
                s.tokens += tokens

    def _start_cooldown(self, retry_after: float | None) -> None:
        if retry_after is None:
            return
        until = self._clock() + min(retry_after, self.retry.max_retry_after)
        with self._lock:
            self._cooldown_until = max(self._cooldown_until, until)

    def _wait_cooldown(self) -> None:
        with self._lock:
            wait = self._cooldown_until - self._clock()
        if wait > 0:
            self._sleep(wait)

    def _tighten(self, rl: RateLimitHeaders) -> None:
        # Without a configured limit, the server's own limit header starts a bucket.
        with self._lock:
            if self._requests is None and rl.limit_requests:
                self._requests = TokenBucket(
                    rl.limit_requests, clock=self._clock, sleep=self._sleep
                )
            if self._tokens is None and rl.limit_tokens:
                self._tokens = TokenBucket(rl.limit_tokens, clock=self._clock, sleep=self._sleep)
        if self._requests:
            self._requests.tighten(
                limit=rl.limit_requests, remaining=rl.remaining_requests, reset_s=rl.reset_requests
            )
        if self._tokens:
            self._tokens.tighten(
                limit=rl.limit_tokens, remaining=rl.remaining_tokens, reset_s=rl.reset_tokens
            )

    def __repr__(self) -> str:
        return f"ReliableProvider({self.inner!r})"
