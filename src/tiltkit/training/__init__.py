"""Training: the base generator, the energy by contrastive divergence (on a base run or on the user's own
generator), the Denoising-EBM; each with its Method. Layers, bottom up: rundir/checkpoint/distributed,
builders, loop and method, the trainers."""

from .base import BASE, train_base
from .contrastive import TILT, train_tilt
from .denoising import DEBM, train_debm
from .module_tilt import MODULE_TILT

__all__ = ["BASE", "DEBM", "MODULE_TILT", "TILT", "train_base", "train_debm", "train_tilt"]
