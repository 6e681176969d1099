"""tiltkit: energy-based tilting of deep generative models, p(x) ∝ p_base(x)·exp(−E(x)).

Tilt your own generator: `as_base`, `fit_tilt`, `load` (api.py); any run loads as a `Run`.

The names below load with their module on first use (`tiltkit.fit_tilt`, `from tiltkit import load`), so
that `import tiltkit` (and `tiltkit --help`) does not pay for torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

PUBLIC = {"Run": "api", "as_base": "api", "fit_tilt": "api", "load": "api", "DenoisingEBM": "denoising",
          "UserError": "errors", "ReplayBuffer": "samplers", "SampleResult": "samplers", "hmc": "samplers",
          "langevin": "samplers", "TiltedModel": "tilt"}
__all__ = sorted(PUBLIC)

if TYPE_CHECKING:  # what type checkers and editors see ("X as X": a re-export)
    from .api import Run as Run, as_base as as_base, fit_tilt as fit_tilt, load as load
    from .denoising import DenoisingEBM as DenoisingEBM
    from .errors import UserError as UserError
    from .samplers import ReplayBuffer as ReplayBuffer, SampleResult as SampleResult, hmc as hmc, langevin as langevin
    from .tilt import TiltedModel as TiltedModel


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module 'tiltkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *PUBLIC})
