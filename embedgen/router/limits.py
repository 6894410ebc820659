"""Rate limits, retry delays and the circuit breaker: the router's reliability primitives.

All are thread-safe (the pipeline calls a provider from several threads) and take a
``clock`` so tests can drive time. :class:`TokenBucket` meters requests/min and
tokens/min and can be tightened from ``x-ratelimit-*`` headers;
:class:`RetryPolicy` gives exponential backoff with full jitter that honours a clamped
``Retry-After`` (it lives with the HTTP transport, :mod:`embedgen.providers.transport`,
which the batch client shares); :class:`CircuitBreaker` stops sending to a provider that
keeps failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from embedgen.providers.transport import RetryPolicy as RetryPolicy  # the router's policy

Clock = Callable[[], float]


class Bucket(Protocol):
    """A member's requests/min or tokens/min meter: :class:`TokenBucket` in this process,
    or one shared by every worker of a run (``engines.ray_limits.RemoteBucket``)."""

    def reserve(self, n: float) -> float:
        """Take ``n`` now; the seconds to wait before using them."""
        ...

    def take(self, n: float) -> float:
        """Take ``n``, sleeping as long as that needs; the seconds slept."""
        ...

    def tighten(
        self, *, limit: float | None, remaining: float | None, reset_s: float | None
    ) -> None:
        """Follow a server's ``x-ratelimit-*`` headers."""
        ...


class Buckets(Protocol):
    """Where a member's buckets come from (given to :class:`~embedgen.router.member.Member`)."""

    def bucket(
        self, name: str, kind: str, per_minute: float | None, sleep: Callable[[float], None]
    ) -> Bucket | None:
        """Member ``name``'s ``kind`` (``requests`` or ``tokens``) bucket at ``per_minute``;
        None without a limit."""
        ...


@dataclass(frozen=True)
class OwnBuckets:
    """Buckets of this process alone (the local engine's)."""

    clock: Clock = time.monotonic

    def bucket(
        self, name: str, kind: str, per_minute: float | None, sleep: Callable[[float], None]
    ) -> Bucket | None:
        return TokenBucket(per_minute, clock=self.clock, sleep=sleep) if per_minute else None


class TokenBucket:
    """``rate`` units per second, up to ``capacity`` banked; a take may run into debt.

    Debt lets one request larger than the capacity through (after waiting for the
    refill it costs), so a big batch is slowed, never refused.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst_seconds: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._burst = burst_seconds
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._level = self.capacity
        self._stamp = clock()

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self, n: float) -> float:
        """Take ``n`` now and return how long to wait before using them."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._level -= n
            return 0.0 if self._level >= 0 else -self._level / self.rate

    def take(self, n: float) -> float:
        """Take ``n``, sleeping until they are covered; returns the seconds slept."""
        wait = self.reserve(n)
        if wait > 0:
            self._sleep(wait)
        return wait

    def set_rate(self, per_minute: float) -> None:
        """Change the rate (the adaptive limiter's lever); the level carries over."""
        with self._lock:
            self._refill(self._clock())
            self.rate = per_minute / 60.0
            self.capacity = max(1.0, self.rate * self._burst)
            self._level = min(self._level, self.capacity)

    def refund(self, n: float) -> None:
        """Give back units taken for a request that the server never counted."""
        with self._lock:
            self._refill(self._clock())
            self._level = min(self.capacity, self._level + n)

    def tighten(
        self, *, limit: float | None, remaining: float | None, reset_s: float | None
    ) -> None:
        """Apply ``x-ratelimit-limit/remaining/reset`` values: never loosen, only tighten."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            if limit is not None and limit > 0 and limit / 60.0 < self.rate:
                self.rate = limit / 60.0
                self.capacity = max(1.0, self.rate * self._burst)
                self._level = min(self._level, self.capacity)
            if remaining is not None and remaining < self._level:
                self._level = float(remaining)
                if remaining <= 0 and reset_s is not None and reset_s > 0:
                    # Nothing left until the server's window resets: owe that much time.
                    self._level = min(self._level, -reset_s * self.rate)


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures → half-open after
    ``recovery_timeout`` → closed after ``success_threshold`` successes (any failure while
    half-open re-opens it). While half-open at most ``success_threshold`` calls are let
    through at a time, as probes.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        success_threshold: int = 2,
        clock: Clock = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.success_threshold = success_threshold
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._probes = 0
        self.openings = 0

    @property
    def state(self) -> str:
        with self._lock:
            self._tick()
            return self._state

    def _tick(self) -> None:
        if self._state == self.OPEN and self._clock() - self._opened_at >= self.recovery_timeout:
            self._state, self._successes, self._probes = self.HALF_OPEN, 0, 0

    def seconds_until_probe(self) -> float:
        """0 when a call may be tried now, else seconds until the breaker half-opens."""
        with self._lock:
            self._tick()
            if self._state == self.OPEN:
                return max(0.0, self._opened_at + self.recovery_timeout - self._clock())
            return 0.0

    def available(self) -> bool:
        """Whether a call would be let through now (does not claim a probe slot)."""
        with self._lock:
            self._tick()
            if self._state == self.CLOSED:
                return True
            return self._state == self.HALF_OPEN and self._probes < self.success_threshold

    def acquire(self) -> bool:
        """Claim the right to make one call; False while open (or half-open and busy)."""
        with self._lock:
            self._tick()
            if self._state == self.CLOSED:
                return True
            if self._state == self.HALF_OPEN and self._probes < self.success_threshold:
                self._probes += 1
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            if self._state == self.HALF_OPEN:
                self._probes = max(0, self._probes - 1)
                self._successes += 1
                if self._successes >= self.success_threshold:
                    self._state = self.CLOSED

    def record_failure(self) -> None:
        with self._lock:
            if self._state == self.HALF_OPEN:
                self._open()
                return
            if self._state == self.OPEN:
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()

    def release(self) -> None:
        """Give back a probe slot taken by :meth:`acquire` for a call that was not made."""
        with self._lock:
            if self._state == self.HALF_OPEN:
                self._probes = max(0, self._probes - 1)

    def _open(self) -> None:
        self._state = self.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self.openings += 1
