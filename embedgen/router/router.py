"""The router: who embeds a batch, decided in one place.

A run has one :class:`Router` over the ordered members of its provider chain (a local
model alone is a chain of one). For each batch it walks the members in order and, for
each, checks the breaker, the budget (the :class:`~embedgen.router.spend.Spend` account),
then sends with the member's limits, retrying transient failures with backoff that
honours ``Retry-After``; a member that gives up, has its breaker open or cannot pay hands
the batch to the next. A fatal error (bad key, bad request) stops the run: retrying
elsewhere would hide it. When every breaker is open the router waits, once, for the
first to half-open. When every member refused on budget the run stops with exit 3.

Members must share one embedding space unless ``allow_mixed_models``; then every result
says which model embedded each row (``EmbedResult.models``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from embedgen.errors import (
    BreakerOpenError,
    ConfigError,
    FatalProviderError,
    OverBudget,
    ProviderError,
    TransientProviderError,
)
from embedgen.providers.base import Batch, EmbedResult, ProviderInfo, TextTokenizer
from embedgen.redact import redact
from embedgen.router.member import Member, ProviderStats
from embedgen.router.spend import Spend

log = logging.getLogger("embedgen")

RATE_LIMIT_COST = 0.25
"""Tries a 429 spends of a batch's ``1 + max_retries``: rate limits wait, they don't fail."""


class Router:
    """Members in order of preference; the first one's tokenizer counts for chunking."""

    def __init__(
        self,
        members: Sequence[Member],
        *,
        allow_mixed_models: bool = False,
        spend: Spend | None = None,
        max_wait: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not members:
            raise ConfigError("run.providers: the fallback chain needs at least one provider")
        self.members = list(members)
        self.allow_mixed_models = allow_mixed_models
        self.spend = spend
        self.max_wait = max_wait
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._outage: float | None = None
        """When every breaker was first seen open (monotonic), while they all still are."""
        self._dead: ProviderError | None = None
        """Set when an outage outlived one recovery period: every batch fails at once."""
        _check_spaces(self.members, allow_mixed_models)
        self.mixed = len({m.info.space for m in self.members}) > 1
        only = self.members[0]
        # A local model alone is called directly: nothing to retry, limit or fall back to.
        self._direct = len(self.members) == 1 and not only.reliable
        self.info = only.info if self._direct else _chain_info(self.members, self.mixed)

    # The contract ------------------------------------------------------------------
    def tokenizer(self) -> TextTokenizer:
        return self.members[0].tokenizer()

    def stats(self) -> dict[str, ProviderStats]:
        """Per API member: requests, retries, failures, breaker openings, tokens, seconds."""
        return {m.info.name: m.stats() for m in self.members if m.reliable}

    def prepare(self) -> None:
        """Let the first member, which takes the batches while it is healthy, get ready."""
        self.members[0].provider.prepare()

    def ready(self) -> bool:
        """False while the first member is still getting ready (see :meth:`prepare`)."""
        return self.members[0].provider.ready()

    def close(self) -> None:
        for m in self.members:
            m.close()

    def embed(self, batch: Batch) -> EmbedResult:
        """Embed ``batch`` with the first member that can; ProviderError when none could."""
        if self._direct:
            return self.members[0].provider.embed_batch(batch)
        if self._dead is not None:
            raise self._dead
        errors: list[str] = []
        refused: dict[str, str] = {}
        waited = False
        # A second round only when every member was skipped (breaker open or over budget):
        # wait for the first breaker to half-open, once, up to max_wait.
        for _round in range(2):
            tried = False
            for m in self.members:
                name = m.info.name
                if not m.available():
                    errors.append(f"{name}: circuit breaker open")
                    continue
                reservation, why = self._reserve(m, batch)
                if why is not None:
                    refused.setdefault(name, why)
                    errors.append(f"{name}: budget does not cover the batch ({why})")
                    continue
                tried = True
                try:
                    result = self._send(m, batch)
                except BaseException as exc:
                    if reservation is not None and self.spend is not None:
                        self.spend.release(reservation)
                    if isinstance(exc, FatalProviderError) or not isinstance(exc, ProviderError):
                        raise
                    errors.append(str(exc))
                    continue
                self._recovered()
                if reservation is not None and self.spend is not None:
                    used = result.usage_tokens
                    self.spend.settle(reservation, batch.tokens if used is None else used)
                if self.allow_mixed_models:
                    return EmbedResult(
                        result.vectors, result.usage_tokens, models=[m.info.model] * len(batch)
                    )
                return result
            if tried or self._dead is not None or not self._wait_for_breaker(refused):
                break
            waited = True
        if self.spend is not None and refused and all(m.info.name in refused for m in self.members):
            raise self.spend.exceeded(refused)
        error = ProviderError(
            redact("every provider failed: " + "; ".join(errors[-len(self.members) :]))
        )
        if self._all_open(refused) and (waited or self._outage_over()):
            # every breaker re-opened after the one probe we waited for: stop the run now
            with self._lock:
                self._dead = self._dead or error
        raise error

    # Decisions ---------------------------------------------------------------------
    def _reserve(self, m: Member, batch: Batch) -> tuple[object | None, str | None]:
        """(reservation, None) when the member may take the batch, (None, why) when not."""
        price = m.info.price_per_mtok
        if self.spend is None or price <= 0:
            return None, None
        why = self.spend.fits(m.info.name, price, batch.tokens)
        if why is not None:
            return None, why
        try:
            return self.spend.reserve(m.info.name, price, batch.tokens), None
        except OverBudget as exc:
            return None, exc.reason

    def _all_open(self, refused: dict[str, str]) -> bool:
        """Whether every member that could pay has its breaker open; warns once per outage."""
        candidates = [m for m in self.members if m.info.name not in refused]
        if not candidates or any(m.available() for m in candidates):
            return False
        with self._lock:
            if self._outage is not None:
                return True
            self._outage = time.monotonic()
        wait = max(m.seconds_until_available() for m in candidates)
        for m in candidates:
            log.warning(
                redact(
                    f"{m.info.name}: circuit breaker open after repeated failures "
                    f"(last: {m.last_error}); every provider is failing, waiting {wait:.0f}s "
                    "for one probe before stopping"
                )
            )
        return True

    def _outage_over(self) -> bool:
        """Whether every breaker has stayed open longer than one recovery and a probe: stop."""
        with self._lock:
            since = self._outage
        if since is None:
            return False
        limit = max(
            (m.settings.recovery_timeout + m.settings.timeout) if m.settings else 0.0
            for m in self.members
        )
        return time.monotonic() - since > limit

    def _recovered(self) -> None:
        if self._outage is not None:
            with self._lock:
                self._outage = None
            log.warning("a provider answers again; the run goes on")

    def _wait_for_breaker(self, refused: dict[str, str]) -> bool:
        """Sleep until the first breaker of a member that can pay half-opens; False if none."""
        hints = [m.seconds_until_available() for m in self.members if m.info.name not in refused]
        wait = min(hints, default=0.0)
        if not hints or wait > self.max_wait:
            return False
        self._sleep(max(wait, 0.01))
        return True

    def _send(self, m: Member, batch: Batch) -> EmbedResult:
        """The batch to one member, with its retries; ProviderError when it gives up."""
        if not m.reliable:
            return m.provider.embed_batch(batch)
        name = m.info.name
        with m.slot():
            last: ProviderError | None = None
            attempts = m.retry.max_retries + 1
            tries = 0
            spent = 0.0  # a 429 spends a quarter of a try: rate limits pass, faults don't
            while spent < attempts:
                tries += 1
                if tries > 1:
                    m.retried()
                    ra = last.retry_after if isinstance(last, TransientProviderError) else None
                    m.sleep(m.retry.delay(min(tries - 1, attempts), ra, self._rng))
                try:
                    return m.attempt(batch)
                except BreakerOpenError:
                    raise
                except FatalProviderError as exc:
                    m.failed(str(exc), fault=False)
                    raise
                except TransientProviderError as exc:
                    last = exc
                    m.observe(exc.rate_limits)
                    if exc.status == 429:
                        # Rate limiting is not a fault of the provider: back off, keep the breaker.
                        m.failed(str(exc), fault=False, rate_limited=True)
                        m.cool_down(exc.retry_after)
                        spent += RATE_LIMIT_COST
                        continue
                    m.failed(str(exc), fault=True)
                except ProviderError as exc:
                    last = exc
                    m.failed(str(exc), fault=True)
                spent += 1
                if not m.available():  # its breaker opened: no point in waiting to retry here
                    break
            m.gave_up()
            raise ProviderError(redact(f"{name}: gave up after {tries} attempts: {last}"))

    def __repr__(self) -> str:
        return f"Router({self.members!r})"


def _check_spaces(members: list[Member], allow_mixed_models: bool) -> None:
    first = members[0].info
    for m in members[1:]:
        info = m.info
        if info.dim != first.dim:
            raise ConfigError(
                f"run.providers: {info.name!r} makes {info.dim}-d vectors but "
                f"{first.name!r} makes {first.dim}-d; a chain needs one vector size"
            )
        if info.space != first.space and not allow_mixed_models:
            raise ConfigError(
                f"run.providers: {info.name!r} (space {info.space!r}) and "
                f"{first.name!r} (space {first.space!r}) embed into different spaces; "
                "use providers of the same model, or set run.allow_mixed_models = true"
            )


def _chain_info(members: list[Member], mixed: bool) -> ProviderInfo:
    infos = [m.info for m in members]
    first = infos[0]
    names = "+".join(i.name for i in infos)
    return ProviderInfo(
        name=names,
        kind="chain",
        model=first.model if not mixed else "+".join(i.model for i in infos),
        space=first.space if not mixed else "mixed:" + "+".join(i.space for i in infos),
        dim=first.dim,
        max_tokens=min(i.max_tokens for i in infos),
        max_batch_inputs=min(i.max_batch_inputs for i in infos),
        max_batch_tokens=min(i.max_batch_tokens for i in infos),
        price_per_mtok=first.price_per_mtok,
        max_concurrency=max(i.max_concurrency for i in infos),
        # One space, one fingerprint: a vector cached from any member serves all.
        fingerprint=first.fingerprint
        if not mixed
        else "mixed|" + "|".join(i.fingerprint for i in infos),
        details={**first.details, "providers": names},
    )
