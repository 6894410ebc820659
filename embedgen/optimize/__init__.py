"""``embedgen optimize``: faster int8 variants of a model, measured on a sample.

:func:`optimize_model` searches variants (:mod:`embedgen.optimize.search`), compares
each with the original (:mod:`embedgen.optimize.fidelity`) on the built-in or the
user's sample (:mod:`embedgen.optimize.sample`) and writes the fastest that meets the
floor as a model folder (:mod:`embedgen.optimize.folder`). The graph work itself is in
:mod:`embedgen.models.variants`.
"""

from __future__ import annotations

from embedgen.optimize.api import (
    DEFAULT_MIN_COS,
    DEFAULT_MIN_WORST,
    OptimizeResult,
    optimize_model,
)

__all__ = ["DEFAULT_MIN_COS", "DEFAULT_MIN_WORST", "OptimizeResult", "optimize_model"]
