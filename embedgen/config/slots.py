"""Model slots: several models in one run, one vector column each (``embedding_<NAME>``).

A slot is one model, or one fallback chain of ``[providers.*]`` tables, with its own
outputs and spend cap. Slots come from ``[slots.NAME]`` tables and from the command line
(``--model NAME=SPEC``, repeatable). One plain ``--model SPEC`` keeps the single-column run.

::

    [slots.fast]
    model = "default"                     # what --model takes: a name, a folder, an .onnx file
    [slots.hosted]
    providers = ["openai", "azure"]       # a fallback chain: its own limits and breaker
    max_cost_usd = 2.0                    # this slot's cap, beside the run's caps
    [slots.m3]
    model = "bge-m3"
    outputs = ["dense", "sparse", "colbert"]

:func:`slot_config` derives each slot's own :class:`Config` (the run's, with the slot's
model or chain), so a slot's router, fingerprint, cache entries and budget line are built
by the same code as a single-model run's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from embedgen.config.base import Strict, lower
from embedgen.errors import ConfigError

if TYPE_CHECKING:
    from embedgen.config.schema import Config

SLOT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
"""A slot name: it becomes part of column names (``embedding_<NAME>``)."""

Output = Annotated[Literal["dense", "sparse", "colbert"], BeforeValidator(lower)]


class SlotConfig(Strict):
    """``[slots.NAME]``: one model (``model``) or one provider chain (``providers``)."""

    model: str | None = None
    """A local model: what ``--model`` takes (``default``, a downloaded name, a folder)."""
    providers: list[str] = Field(default_factory=list)
    """A chain of ``[providers.NAME]`` tables, tried in order (each with its own limits)."""
    outputs: list[Output] = ["dense"]  # noqa: RUF012 - pydantic copies defaults
    """``dense`` always; ``sparse`` and ``colbert`` for a model with bge-m3's heads."""
    dimensions: int | None = Field(default=None, gt=0)
    """Truncate this slot's vectors (Matryoshka); unset: ``[run] dimensions``."""
    max_cost_usd: float | None = Field(default=None, ge=0)
    """A cap on this slot's spend in this run."""

    @model_validator(mode="after")
    def _one_source(self) -> SlotConfig:
        if (self.model is None) == (not self.providers):
            raise ValueError("give either model or providers")
        if "dense" not in self.outputs:
            raise ValueError('outputs must include "dense"')
        return self


def parse_model_args(values: list[str]) -> tuple[str | None, dict[str, str]]:
    """``--model`` values: one plain SPEC, or ``NAME=SPEC`` slots (never both).

    A value is a slot when the text before its first ``=`` is a slot name, so a folder
    whose path holds ``=`` (``./runs/a=b``) is still a plain SPEC.
    """
    plain: list[str] = []
    slots: dict[str, str] = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not SLOT_NAME.fullmatch(name):
            plain.append(value)
            continue
        if not spec:
            raise ConfigError(f"--model {value}: no model after '='")
        if name in slots:
            raise ConfigError(f"--model: slot {name!r} is given twice")
        slots[name] = spec
    if plain and (slots or len(plain) > 1):
        raise ConfigError(
            "--model: give one model, or name every one (--model NAME=SPEC, repeatable)"
        )
    return (plain[0] if plain else None), slots


def check_slot_name(name: str) -> None:
    if not SLOT_NAME.fullmatch(name):
        raise ConfigError(
            f"slots.{name}: a slot name is a letter, then letters, digits or '_' (at most 40)"
        )


def add_cli_slots(cfg: Config, slots: dict[str, str]) -> None:
    """Add ``--model NAME=SPEC`` slots: SPEC names a ``[providers.*]`` table or a model."""
    for name, spec in slots.items():
        check_slot_name(name)
        if name in cfg.slots:
            raise ConfigError(f"--model {name}={spec}: slot {name!r} is also in the config file")
        chain = [spec] if spec in cfg.providers else []
        cfg.slots[name] = SlotConfig(model=None if chain else spec, providers=chain)


def check_slots(cfg: Config, where: str = "") -> None:
    """Slot names and chains name what exists; a run with slots has no chain of its own."""
    for name, slot in cfg.slots.items():
        check_slot_name(name)
        for p in slot.providers:
            if p not in cfg.providers:
                raise ConfigError(
                    f"{where}slots.{name}.providers: {p!r} has no [providers.{p}] table"
                )
    if cfg.slots and cfg.run.providers:
        raise ConfigError(
            f"{where}run.providers: a run with [slots] gives each slot its own chain "
            "(slots.NAME.providers)"
        )


def slot_config(cfg: Config, name: str) -> Config:
    """The run's config as a single-model run of slot ``name`` would see it."""
    slot = cfg.slots[name]
    out = cfg.model_copy(deep=True)
    out.slots = {}
    out.run.providers = list(slot.providers)
    if slot.model is not None:
        out.model.model = slot.model
    out.run.sparse = "sparse" in slot.outputs
    out.run.colbert = "colbert" in slot.outputs
    if slot.dimensions is not None:
        out.run.dimensions = slot.dimensions
    return out
