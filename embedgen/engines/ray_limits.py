"""One place per Ray run for what must be global: rate limits, spend and provider stats.

Every embedding worker builds its own router, but an API's ``rpm``/``tpm`` and the
budget's caps are the account's, not a worker's. :class:`RunLimits` holds the token
buckets of every API provider of the chain and the run's spend account, and runs as one
named Ray actor (pinned to the driver's node, where the budget ledger lives). Workers
build their members with :class:`SharedBuckets` (each bucket a :class:`RemoteBucket`)
and their router with :class:`RemoteSpend`, through the constructors' ``buckets`` and
``spend`` (typed by ``router.limits.Buckets`` and ``router.spend.Spend``): each request
first asks the actor, which answers how long to wait
(the bucket is debited at once, so N workers together stay within the limit) or
whether the money is there (reserved at once, so a cap holds with requests in flight).
Workers also report their provider statistics here, for the run summary.

:class:`RunLimits` is a plain class (tested without Ray); :func:`start` makes it an actor.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

from embedgen.errors import BudgetExceeded, OverBudget

ACTOR_PREFIX = "embedgen-limits-"


class RunLimits:
    """Global token buckets per provider name, the spend account, and merged stats."""

    def __init__(
        self,
        limits: Mapping[str, tuple[float | None, float | None]],
        budget_factory: Callable[[], Any] | None = None,
    ) -> None:
        from embedgen.router.limits import TokenBucket

        self._buckets: dict[tuple[str, str], Any] = {}
        for name, (rpm, tpm) in limits.items():
            if rpm:
                self._buckets[(name, "requests")] = TokenBucket(rpm)
            if tpm:
                self._buckets[(name, "tokens")] = TokenBucket(tpm)
        self.budget = budget_factory() if budget_factory is not None else None
        """The run's RunBudget (pipeline/run_budget.py), or None."""
        self.spend = self.budget.budget if self.budget is not None else None
        self._reservations: dict[int, Any] = {}
        self._ids = itertools.count(1)
        self._stats: dict[str, dict[str, Any]] = {}

    # Token buckets --------------------------------------------------------------------
    def reserve(self, name: str, kind: str, n: float) -> float:
        """Debit ``n`` now; the seconds the caller must wait before sending."""
        bucket = self._buckets.get((name, kind))
        return bucket.reserve(n) if bucket is not None else 0.0

    def refund(self, name: str, kind: str, n: float) -> None:
        bucket = self._buckets.get((name, kind))
        if bucket is not None:
            bucket.refund(n)

    def tighten(
        self,
        name: str,
        kind: str,
        limit: float | None,
        remaining: float | None,
        reset_s: float | None,
    ) -> None:
        """A server's ``x-ratelimit-*`` headers, seen by one worker, tighten everyone's bucket."""
        from embedgen.router.limits import TokenBucket

        bucket = self._buckets.get((name, kind))
        if bucket is None and limit:
            bucket = self._buckets[(name, kind)] = TokenBucket(limit)
        if bucket is not None:
            bucket.tighten(limit=limit, remaining=remaining, reset_s=reset_s)

    # Spend --------------------------------------------------------------------------------
    def fits(self, account: str, price: float, tokens: int) -> str | None:
        return None if self.spend is None else self.spend.fits(account, price, tokens)

    def reserve_spend(self, account: str, price: float, tokens: int) -> tuple[int, str | None]:
        """(reservation id, None), or (0, why not) when a cap would be passed."""
        if self.spend is None:
            return 0, None
        try:
            res = self.spend.reserve(account, price, tokens)
        except OverBudget as exc:
            return 0, exc.reason
        rid = next(self._ids)
        self._reservations[rid] = res
        return rid, None

    def settle(self, rid: int, billed_tokens: int) -> None:
        res = self._reservations.pop(rid, None)
        if res is not None and self.spend is not None:
            self.spend.settle(res, billed_tokens)

    def release(self, rid: int) -> None:
        res = self._reservations.pop(rid, None)
        if res is not None and self.spend is not None:
            self.spend.release(res)

    def exceeded(self, refused: dict[str, str]) -> BudgetExceeded:
        if self.spend is None:
            return BudgetExceeded("; ".join(f"{k}: {v}" for k, v in refused.items()))
        return self.spend.exceeded(refused)

    def budget_lines(self) -> list[str]:
        """The run summary's spend lines."""
        return self.budget.lines() if self.budget is not None else []

    def budget_stop_message(self) -> str | None:
        """Why the run stopped on budget, rebuilt once requests in flight have settled."""
        b = self.spend
        return b.message() if b is not None and b.stop_reason is not None else None

    def budget_close(self, status: str) -> None:
        if self.budget is not None:
            self.budget.close(status)

    # Stats --------------------------------------------------------------------------------
    def report(self, worker: str, stats: Mapping[str, Any]) -> None:
        """A worker's cumulative per-provider stats (ProviderStats as dicts)."""
        self._stats[worker] = dict(stats)

    def stats(self) -> dict[str, dict[str, float]]:
        """Per provider name: every worker's counters summed."""
        out: dict[str, dict[str, float]] = {}
        for per_worker in self._stats.values():
            for name, st in per_worker.items():
                acc = out.setdefault(name, {})
                for k, v in st.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        acc[k] = acc.get(k, 0) + v
        return out


class RemoteBucket:
    """A member's token bucket that lives in the run's :class:`RunLimits` actor."""

    def __init__(
        self, actor: Any, name: str, kind: str, sleep: Callable[[float], None] = time.sleep
    ):
        self.actor, self.name, self.kind, self._sleep = actor, name, kind, sleep

    def reserve(self, n: float) -> float:
        import ray

        return float(ray.get(self.actor.reserve.remote(self.name, self.kind, n)))

    def take(self, n: float) -> float:
        wait = self.reserve(n)
        if wait > 0:
            self._sleep(wait)
        return wait

    def refund(self, n: float) -> None:
        self.actor.refund.remote(self.name, self.kind, n)

    def tighten(
        self, *, limit: float | None, remaining: float | None, reset_s: float | None
    ) -> None:
        import ray

        ray.get(self.actor.tighten.remote(self.name, self.kind, limit, remaining, reset_s))


class RemoteSpend:
    """The router's spend account, answered by the run's :class:`RunLimits` actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def fits(self, account: str, price_per_mtok: float, tokens: int) -> str | None:
        import ray

        why = ray.get(self.actor.fits.remote(account, price_per_mtok, tokens))
        return None if why is None else str(why)

    def reserve(self, account: str, price_per_mtok: float, tokens: int) -> int:
        import ray

        rid, why = ray.get(self.actor.reserve_spend.remote(account, price_per_mtok, tokens))
        if why is not None:
            raise OverBudget(f"{account}: {why}", reason=why)
        return int(rid)

    def settle(self, reservation: Any, billed_tokens: int) -> None:
        import ray

        ray.get(self.actor.settle.remote(reservation, billed_tokens))

    def release(self, reservation: Any) -> None:
        import ray

        ray.get(self.actor.release.remote(reservation))

    def exceeded(self, refused: dict[str, str]) -> BudgetExceeded:
        import ray

        err = ray.get(self.actor.exceeded.remote(refused))
        return err if isinstance(err, BudgetExceeded) else BudgetExceeded(str(err))


def start(
    run_id: str,
    limits: Mapping[str, tuple[float | None, float | None]],
    budget_factory: Callable[[], Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Any:
    """The run's :class:`RunLimits` as a named actor on this (the driver's) node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor_cls: Any = ray.remote(RunLimits)
    return actor_cls.options(
        name=ACTOR_PREFIX + run_id,
        get_if_exists=True,
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        runtime_env={"env_vars": dict(env or {})},
    ).remote(dict(limits), budget_factory)


def lookup(run_id: str) -> Any:
    """The run's actor, from any worker of the run."""
    import ray

    return ray.get_actor(ACTOR_PREFIX + run_id)


class SharedBuckets:
    """Members' buckets in the run's :class:`RunLimits` actor (a ``router.limits.Buckets``).

    Only where a limit is known, as in a local run: a configured ``rpm``/``tpm``, or one a
    server states in its ``x-ratelimit-*`` headers (which then starts one bucket in the
    actor for every worker, not one per worker). A member without either adapts to 429s
    (AIMD) the same way on both engines.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def bucket(
        self, name: str, kind: str, per_minute: float | None, sleep: Callable[[float], None]
    ) -> RemoteBucket | None:
        return RemoteBucket(self.actor, name, kind, sleep) if per_minute else None


def stats_dict(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """ProviderStats objects as plain dicts (what crosses to the actor)."""
    return {name: dataclasses.asdict(st) for name, st in stats.items()}
