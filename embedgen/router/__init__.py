"""Who embeds each batch: the router over a run's provider chain.

``build_router(cfg, spend)`` gives the run's :class:`Router`; a :class:`Member` is one
provider with its limits, breaker and statistics; :class:`Spend` is the budget as the
router sees it. Nothing here imports an HTTP client or onnxruntime until a provider is built.
"""

from __future__ import annotations

from embedgen.router.build import build_router
from embedgen.router.member import Member, ProviderStats, Reliability
from embedgen.router.router import Router
from embedgen.router.spend import Spend

__all__ = ["Member", "ProviderStats", "Reliability", "Router", "Spend", "build_router"]
