"""tiltkit: energy-based tilting of deep generative models, p(x) ∝ p_base(x)·exp(−E(x))."""

from .denoising import DenoisingEBM
from .samplers import ReplayBuffer, SampleResult, hmc, langevin
from .tilt import TiltedModel

__version__ = "0.1.0"
__all__ = ["DenoisingEBM", "ReplayBuffer", "SampleResult", "TiltedModel", "hmc", "langevin"]
