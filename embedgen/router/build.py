"""Building a run's router from the config: one member per name in ``run.providers``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedgen.router.member import Member, Reliability
from embedgen.router.router import Router

if TYPE_CHECKING:
    from embedgen.config import Config
    from embedgen.router.limits import Buckets
    from embedgen.router.spend import Spend


def reliability(pcfg: Any) -> Reliability:
    """Limits, retries and breaker settings of an API provider's config table."""
    return Reliability(
        rpm=pcfg.rpm,
        tpm=pcfg.tpm,
        max_retries=pcfg.max_retries,
        backoff_base=pcfg.backoff_base,
        backoff_max=pcfg.backoff_max,
        failure_threshold=pcfg.failure_threshold,
        recovery_timeout=pcfg.recovery_timeout,
        success_threshold=pcfg.success_threshold,
        max_concurrency=pcfg.max_concurrency,
        timeout=pcfg.timeout,
    )


def build_members(cfg: Config, buckets: Buckets | None = None) -> list[Member]:
    """The chain's members in order: local models bare, API providers with their limits
    (``buckets``: where their rpm/tpm buckets live; this process by default)."""
    from embedgen.providers.factory import build_member, is_api

    members: list[Member] = []
    try:
        for name in cfg.run.providers or ["local"]:
            provider = build_member(cfg, name)
            pcfg = cfg.providers.get(name)
            settings = reliability(pcfg) if is_api(pcfg) else None
            members.append(Member(provider, settings, buckets=buckets))
    except BaseException:
        for m in members:
            m.close()
        raise
    return members


def build_router(cfg: Config, spend: Spend | None = None) -> Router:
    """The run's router over ``cfg.run.providers`` (the embedded default when none)."""
    members = build_members(cfg)
    try:
        return Router(members, allow_mixed_models=cfg.run.allow_mixed_models, spend=spend)
    except BaseException:
        for m in members:
            m.close()
        raise
