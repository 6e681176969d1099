"""tiltkit: energy-based tilting of deep generative models, p(x) ∝ p_base(x)·exp(−E(x)).

Tilt your own generator: `as_base`, `fit_tilt`, `load` (api.py); any run loads as a `Run`.
"""

from .api import Run, as_base, fit_tilt, load
from .denoising import DenoisingEBM
from .errors import UserError
from .samplers import ReplayBuffer, SampleResult, hmc, langevin
from .tilt import TiltedModel

__version__ = "0.1.0"
__all__ = ["DenoisingEBM", "ReplayBuffer", "Run", "SampleResult", "TiltedModel", "UserError", "as_base", "fit_tilt",
           "hmc", "langevin", "load"]
