"""Matryoshka honesty: ``--dimensions`` only on models trained to be cut, unless forced.

Truncating a model not trained for it (all-MiniLM-L6-v2, bge-m3, ...) still gives vectors,
but retrieval quality falls faster than the size does; ``embedgen eval`` measures how much.
The registry (``matryoshka_dims``), a model card naming Matryoshka training and the hosted
catalog (:data:`embedgen.config.catalog.MATRYOSHKA`) say which models were trained for it.
"""

from __future__ import annotations

from typing import Any

from embedgen.config.catalog import trained_for_truncation
from embedgen.errors import UsageError


def check_dimensions(dimensions: int | None, full_dim: int, model: str, *, trained: bool) -> None:
    """UsageError (exit 2) for a cut beyond the model's dimension, or one it was not trained for."""
    if dimensions is None:
        return
    if dimensions > full_dim:
        raise UsageError(f"--dimensions {dimensions} exceeds the model's dimension {full_dim}")
    if dimensions < full_dim and not trained:
        raise UsageError(
            f"--dimensions {dimensions}: {model} was not trained for truncation (Matryoshka), "
            "so its cut vectors lose more than their size; `embedgen eval` measures how much. "
            "Pass --force to truncate anyway"
        )


def check_api_dimensions(name: str, pcfg: Any, *, force: bool) -> None:
    """``providers.NAME.dimensions`` on a catalog model documented without truncation."""
    if pcfg.dimensions is None or force or trained_for_truncation(pcfg.model) is not False:
        return
    raise UsageError(
        f"providers.{name}.dimensions: {pcfg.model} was not trained for truncation "
        "(Matryoshka); pass --force (run.force_dimensions) to ask for it anyway"
    )
