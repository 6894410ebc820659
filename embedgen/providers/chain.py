"""The fallback chain: an ordered list of providers that is itself a Provider.

A batch goes to the first member that is available (breaker not open) and can
afford it (:meth:`ReliableProvider.can_afford`, the budget's hook); a batch that
exhausts one member's retries, or finds its breaker open, goes to the next. A fatal
error (bad key, bad request) stops the run: retrying elsewhere would hide it.

Members must share one embedding space unless ``allow_mixed_models``; then every
result says which model embedded each row (``EmbedResult.models``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from embedgen.errors import ConfigError, FatalProviderError, ProviderError
from embedgen.providers.base import Batch, EmbedResult, Provider, ProviderInfo, TextTokenizer
from embedgen.redact import redact


def _available(p: Provider) -> bool:
    fn = getattr(p, "available", None)
    return bool(fn()) if callable(fn) else True


def _affordable(p: Provider, batch: Batch) -> bool:
    fn = getattr(p, "can_afford", None)
    return bool(fn(batch)) if callable(fn) else True


def _wait_hint(p: Provider) -> float:
    fn = getattr(p, "seconds_until_available", None)
    return float(fn()) if callable(fn) else 0.0


class FallbackChain(Provider):
    """Members in order of preference; the first one's tokenizer counts for chunking."""

    def __init__(
        self,
        providers: Sequence[Provider],
        allow_mixed_models: bool = False,
        *,
        max_wait: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not providers:
            raise ConfigError("run.providers: the fallback chain needs at least one provider")
        self.members = list(providers)
        self.allow_mixed_models = allow_mixed_models
        self.max_wait = max_wait
        self._sleep = sleep
        first = self.members[0].info
        for p in self.members[1:]:
            if p.info.dim != first.dim:
                raise ConfigError(
                    f"run.providers: {p.info.name!r} makes {p.info.dim}-d vectors but "
                    f"{first.name!r} makes {first.dim}-d; a chain needs one vector size"
                )
            if p.info.space != first.space and not allow_mixed_models:
                raise ConfigError(
                    f"run.providers: {p.info.name!r} (space {p.info.space!r}) and "
                    f"{first.name!r} (space {first.space!r}) embed into different spaces; "
                    "use providers of the same model, or set run.allow_mixed_models = true"
                )
        self.mixed = len({p.info.space for p in self.members}) > 1
        infos = [p.info for p in self.members]
        names = "+".join(i.name for i in infos)
        self.info = ProviderInfo(
            name=names,
            kind="chain",
            model=first.model if not self.mixed else "+".join(i.model for i in infos),
            space=first.space if not self.mixed else "mixed:" + "+".join(i.space for i in infos),
            dim=first.dim,
            max_tokens=min(i.max_tokens for i in infos),
            max_batch_inputs=min(i.max_batch_inputs for i in infos),
            max_batch_tokens=min(i.max_batch_tokens for i in infos),
            price_per_mtok=first.price_per_mtok,
            max_concurrency=max(i.max_concurrency for i in infos),
            # One space, one fingerprint: a vector cached from any member serves all.
            fingerprint=first.fingerprint
            if not self.mixed
            else "mixed|" + "|".join(i.fingerprint for i in infos),
            details={**first.details, "providers": names},
        )

    def tokenizer(self) -> TextTokenizer:
        return self.members[0].tokenizer()

    def embed_batch(self, batch: Batch) -> EmbedResult:
        errors: list[str] = []
        # A second round only when every member was skipped because its breaker was
        # open: wait for the first to half-open, once, up to max_wait.
        for _round in range(2):
            tried = False
            for p in self.members:
                if not _available(p):
                    errors.append(f"{p.info.name}: circuit breaker open")
                    continue
                if not _affordable(p, batch):
                    errors.append(f"{p.info.name}: budget does not cover the batch")
                    continue
                tried = True
                try:
                    result = p.embed_batch(batch)
                except FatalProviderError:
                    raise
                except ProviderError as exc:
                    errors.append(str(exc))
                    continue
                if self.allow_mixed_models:
                    return EmbedResult(
                        result.vectors, result.usage_tokens, models=[p.info.model] * len(batch)
                    )
                return result
            if tried:
                break
            hints = [_wait_hint(p) for p in self.members if _affordable(p, batch)]
            wait = min(hints, default=0.0)
            if not hints or wait > self.max_wait:
                break
            self._sleep(max(wait, 0.01))
        raise ProviderError(
            redact("every provider failed: " + "; ".join(errors[-len(self.members) :]))
        )

    def close(self) -> None:
        for p in self.members:
            p.close()

    def __repr__(self) -> str:
        return f"FallbackChain({self.members!r})"
