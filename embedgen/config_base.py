"""The strict base of every config model, in a module of its own.

``embedgen.config`` and ``embedgen.providers.api_config`` both build on it, so the
provider config models can be imported by ``config.py`` without a cycle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors; assignments are validated like loading."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)
