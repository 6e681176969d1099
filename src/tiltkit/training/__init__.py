"""Training loops: the base generator, the energy by contrastive divergence, the Denoising-EBM, checkpoints,
run directories."""

from .base import train_base
from .contrastive import contrastive_loss, train_tilt
from .denoising import train_debm
from .run import load_run

__all__ = ["contrastive_loss", "load_run", "train_base", "train_debm", "train_tilt"]
