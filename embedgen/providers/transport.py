"""The one HTTP transport of the hosted APIs: client, status → error map, retry policy.

The synchronous providers (:mod:`embedgen.providers.http_base`) and the batch client
(:mod:`embedgen.batch.client`) both send through a :class:`Transport`, so a status means
the same everywhere: 2xx is an answer; 429, 408/409/425, 5xx, timeouts and connection
errors are :class:`TransientProviderError` (with the server's ``Retry-After`` and
``x-ratelimit-*`` headers); 401/403 (with a hint naming the key's variable), 404 (naming
what to check) and other client errors are :class:`FatalProviderError` with the API's own
message. :class:`RetryPolicy` says how long to wait before a retry; the router uses it
between a provider's attempts, the batch client through :meth:`RetryPolicy.call`.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from embedgen.errors import ConfigError, FatalProviderError, ProviderError, TransientProviderError
from embedgen.providers.http_headers import RateLimitHeaders, parse_retry_after
from embedgen.redact import header_problem, redact

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring a server's Retry-After."""

    max_retries: int = 6
    base: float = 0.5
    cap: float = 60.0
    max_retry_after: float = 600.0
    """A Retry-After longer than this is clamped (a server asking for an hour is broken)."""

    def delay(
        self, retry: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        r = rng or random
        backoff = r.uniform(0.0, min(self.cap, self.base * (2.0 ** (retry - 1))))
        if retry_after is not None:
            # The server knows when it can take us again; a little jitter spreads threads.
            return min(self.max_retry_after, retry_after) + r.uniform(0.0, min(self.base, 0.05))
        return backoff

    def call(
        self,
        attempt: Callable[[], T],
        *,
        sleep: Callable[[float], None],
        before_retry: Callable[[], T | None] | None = None,
    ) -> T:
        """``attempt()`` until it succeeds, retrying :class:`TransientProviderError` up to
        ``max_retries`` times after :meth:`delay`. ``before_retry`` may answer instead of a
        retry (a create that reached the server is found rather than sent twice)."""
        for retry in range(self.max_retries + 1):
            if retry and before_retry is not None:
                found = before_retry()
                if found is not None:
                    return found
            try:
                return attempt()
            except TransientProviderError as exc:
                if retry >= self.max_retries:
                    raise
                sleep(self.delay(retry + 1, exc.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover


def status_hint(status: int, key_env: str | None, check: str) -> str:
    """What to check after a refused request: the key (401, 403) or ``check`` (404)."""
    return {
        401: f" (check the key in ${key_env})",
        403: f" (check the key in ${key_env} and its permissions)",
        404: f" (check {check})",
    }.get(status, "")


def api_message(body: bytes, limit: int = 300) -> str:
    """The error text an API put in its body (OpenAI, Azure, Voyage, Cohere, Mistral)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(redact(text).split())[:limit] or "(empty body)"
    msg: Any = data
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err
        elif isinstance(err, str):
            msg = err
        else:
            msg = data.get("message") or data.get("detail") or data
    return " ".join(redact(msg).split())[:limit]  # masked before it is cut


def status_error(
    prefix: str, status: int, body: bytes, headers: Mapping[str, str], key_env: str | None,
    check: str,
) -> ProviderError:  # fmt: skip
    """The error a non-2xx answer means (``prefix`` starts its message)."""
    msg = f"{prefix}HTTP {status}: {api_message(body)}"
    if status in RETRYABLE_STATUS or status >= 500:
        return TransientProviderError(
            redact(msg),
            retry_after=parse_retry_after(headers),
            status=status,
            rate_limits=RateLimitHeaders.parse(headers),
        )
    return FatalProviderError(redact(msg + status_hint(status, key_env, check)))


class Transport:
    """One provider's HTTP client (made on first use, shared by threads) and error map.

    ``name`` starts every message, ``key_env`` is named when the key is refused, ``check``
    when a route is not found (404); ``connections`` caps the pool (None: httpx's default).
    """

    def __init__(
        self,
        name: str,
        *,
        timeout: float,
        key_env: str | None,
        check: str,
        connections: int | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.key_env = key_env
        self.check = check
        self._connections = connections
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                extra: dict[str, Any] = {}
                if self._connections is not None:
                    n = self._connections
                    extra["limits"] = httpx.Limits(
                        max_connections=n + 2, max_keepalive_connections=n
                    )
                self._client = httpx.Client(
                    timeout=self._timeout(self.timeout),
                    headers={"User-Agent": "embedgen"},
                    follow_redirects=False,
                    trust_env=False,
                    **extra,
                )
            return self._client

    def _timeout(self, seconds: float) -> httpx.Timeout:
        import httpx

        return httpx.Timeout(seconds, connect=min(10.0, self.timeout))

    def _prefix(self, what: str | None) -> str:
        return f"{self.name}: cannot {what}: " if what else f"{self.name}: "

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        what: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request; its response when the status is 2xx, else the error it maps to.

        ``what`` (``"poll the batch"``) goes into messages; ``timeout`` overrides the
        client's for one slow transfer.
        """
        import httpx

        for value in headers.values():
            problem = header_problem(value)
            if problem is not None:
                raise ConfigError(
                    f"{self.name}: the API key in {self.key_env} cannot be sent in "
                    f"an HTTP header ({problem})"
                )
        prefix = self._prefix(what)
        if timeout is not None:
            kwargs["timeout"] = self._timeout(timeout)
        try:
            resp = self.client().request(method, url, headers=dict(headers), **kwargs)
        except httpx.TimeoutException:
            waited = self.timeout if timeout is None else timeout
            raise TransientProviderError(f"{prefix}no reply within {waited:g}s (timeout)") from None
        except httpx.TransportError as exc:
            raise TransientProviderError(
                redact(f"{prefix}connection failed ({type(exc).__name__}: {redact(exc)})")
            ) from None
        if not 200 <= resp.status_code < 300:
            raise status_error(
                prefix, resp.status_code, resp.content, resp.headers, self.key_env, self.check
            )
        return resp

    def json(self, resp: httpx.Response, what: str | None = None) -> Any:
        """The parsed body of an answer; a body that is not JSON is transient."""
        try:
            return resp.json()
        except ValueError:
            raise TransientProviderError(
                f"{self._prefix(what)}malformed JSON in the response"
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
