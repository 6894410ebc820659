"""Rate-limit and retry headers of HTTP embedding APIs, parsed into plain values.

``Retry-After`` / ``retry-after-ms`` give the seconds a server asks us to wait;
``x-ratelimit-*`` give its request and token windows. The router's token buckets are
tightened from these (:mod:`embedgen.router.limits`).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float | None:
    """Seconds from OpenAI's reset format (``1s``, ``6m0s``, ``20ms``) or a plain number."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = lower.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RateLimitHeaders:
    """The ``x-ratelimit-*`` values of one response (None where absent)."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders | None:
        lower = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
        if not lower:
            return None

        def num(key: str) -> float | None:
            v = lower.get(key)
            if v is None:
                return None
            try:
                return float(v)
            except ValueError:
                return None

        def dur(key: str) -> float | None:
            v = lower.get(key)
            return parse_duration(v) if v is not None else None

        return cls(
            limit_requests=num("x-ratelimit-limit-requests"),
            remaining_requests=num("x-ratelimit-remaining-requests"),
            reset_requests=dur("x-ratelimit-reset-requests"),
            limit_tokens=num("x-ratelimit-limit-tokens"),
            remaining_tokens=num("x-ratelimit-remaining-tokens"),
            reset_tokens=dur("x-ratelimit-reset-tokens"),
        )
