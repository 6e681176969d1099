"""Base generative models; each implements the `Generator` protocol."""

from .base import Generator
from .vae import MLPVAE

GENERATORS = {"vae": MLPVAE}

__all__ = ["GENERATORS", "Generator", "MLPVAE"]
