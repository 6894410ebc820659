"""The strict base of every config model and the enumerated types its fields share.

Every config model builds on :class:`Strict`: unknown keys are errors and assignments
(command-line overrides) are validated like loading. Enumerated values (device names,
dtypes, pooling, kinds...) are case-insensitive in files and on the command line: each
is a ``Literal`` behind :func:`lower`, so ``"DirectML"`` is stored as ``"directml"``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors; assignments are validated like loading."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


def lower(value: Any) -> Any:
    """A string in lowercase (``"DirectML"`` -> ``"directml"``); anything else unchanged."""
    return value.lower() if isinstance(value, str) else value


Device = Annotated[Literal["auto", "cpu", "cuda", "directml"], BeforeValidator(lower)]
Pooling = Annotated[Literal["mean", "cls", "model"], BeforeValidator(lower)]
Dtype = Annotated[Literal["float32", "float16"], BeforeValidator(lower)]
VectorDtype = Annotated[
    Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"], BeforeValidator(lower)
]
OnError = Annotated[Literal["fail", "skip"], BeforeValidator(lower)]
GraphOptimization = Annotated[
    Literal["auto", "disable", "basic", "extended", "all"], BeforeValidator(lower)
]
