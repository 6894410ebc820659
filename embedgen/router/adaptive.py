"""AIMD for a provider with no configured limits: back off on 429s, creep back on success.

A server that answers 429 with a short ``Retry-After`` but enforces a long window would
otherwise make every worker retry on schedule and fail its batches. Here each 429 halves
the requests allowed in flight and the request rate (at most once per second, since a
burst of 429s is one signal), and each success adds back a little: concurrency by one
after as many successes as it allows, the rate by a twentieth. Only a streak of 429s (three
with no success between) is taken as a limit: a stray 429 among successes is retried and
forgotten. Until the first streak there is no rate limit at all; the first rate is half the
rate of the successes of the last minute.

The halving only shields the server while it refuses; what it allows is learned from whole
cycles. A cycle runs from the first success after one streak to the first success after
the next one, so it spans the server's open and closed time alike (a fixed window that
refuses for most of a minute, a token bucket that refuses for a moment): its successes
over its length are the rate the server allows, and the request rate is set to that when
the server takes requests again, instead of creeping back from wherever the halving left it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from embedgen.router.limits import Clock, TokenBucket

MIN_RATE_PER_MIN = 1.0
DECREASE_EVERY_S = 1.0
FIRST_RATE_PER_MIN = 60.0
"""The first rate when nothing passed in the last minute."""
STREAK = 3
"""429s in a row (no success between) that make a limit."""


class Slots:
    """Up to ``limit`` holders at once; the limit can change while they hold."""

    def __init__(self, limit: int) -> None:
        self.ceiling = max(1, limit)
        self.limit = self.ceiling
        self._held = 0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while self._held >= self.limit:
                self._cond.wait(0.5)
            self._held += 1

    def release(self) -> None:
        with self._cond:
            self._held -= 1
            self._cond.notify()

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self.limit = max(1, min(self.ceiling, limit))
            self._cond.notify_all()


class Aimd:
    """Adaptive concurrency and request rate of one member."""

    def __init__(
        self, slots: Slots, *, clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.slots = slots
        self.bucket: TokenBucket | None = None
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()
        self._last_decrease = -1e9
        self._successes = 0
        self._streak = 0
        self._limited = False
        """A streak of 429s made a limit and no request has passed since."""
        self._cycle_start: float | None = None
        self._cycle_ok = 0

    def before_request(self) -> None:
        """Wait for the adaptive rate (no wait until the first 429)."""
        bucket = self.bucket
        if bucket is not None:
            bucket.take(1)

    def success(self) -> None:
        with self._lock:
            now = self._clock()
            self._recent.append(now)
            while self._recent and self._recent[0] < now - 60.0:
                self._recent.popleft()
            self._successes += 1
            self._streak = 0
            self._learn(now)
            if self._successes >= self.slots.limit:
                self._successes = 0
                self.slots.set_limit(self.slots.limit + 1)
            if self.bucket is not None:
                per_min = self.bucket.rate * 60.0
                self.bucket.set_rate(per_min + max(1.0, per_min / 20.0))

    def rate_limited(self) -> None:
        """A 429: halve concurrency and the request rate (once per burst of 429s)."""
        with self._lock:
            now = self._clock()
            self._streak += 1
            if self._streak < STREAK or now - self._last_decrease < DECREASE_EVERY_S:
                return
            self._last_decrease = now
            self._limited = True
            self._successes = 0
            self.slots.set_limit(self.slots.limit // 2)
            if self.bucket is None:
                # start from half the rate that got us here: what passed in the last minute
                while self._recent and self._recent[0] < now - 60.0:
                    self._recent.popleft()
                seen = 2 * FIRST_RATE_PER_MIN
                if self._recent:  # the rate that got us here, over at least a second
                    span = max(1.0, now - self._recent[0])
                    seen = len(self._recent) / span * 60.0
                self.bucket = TokenBucket(
                    max(MIN_RATE_PER_MIN, seen / 2), clock=self._clock, sleep=self._sleep
                )
            else:
                per_min = self.bucket.rate * 60.0
                self.bucket.set_rate(max(MIN_RATE_PER_MIN, per_min / 2))

    def _learn(self, now: float) -> None:
        """Count a success in its cycle; the first one after a limit closes the cycle and
        sets the request rate to the cycle's (called with the lock held)."""
        if self._limited and self._cycle_start is not None and self.bucket is not None:
            span = now - self._cycle_start
            if span > 0:
                self.bucket.set_rate(max(MIN_RATE_PER_MIN, self._cycle_ok / span * 60.0))
        if self._limited or self._cycle_start is None:
            self._cycle_start, self._cycle_ok = now, 0
            self._limited = False
        self._cycle_ok += 1
