"""Base models; each implements the `Generator` protocol."""

from .base import Generator
from .box import PixelBox
from .conv_vae import ConvVAE, Likelihood
from .vae import MLPVAE

GENERATORS = {"vae": MLPVAE, "conv-vae": ConvVAE, "pixel-box": PixelBox}

__all__ = ["GENERATORS", "ConvVAE", "Generator", "Likelihood", "MLPVAE", "PixelBox"]
