"""Base models; each implements the `Generator` protocol."""

from .base import Generator
from .box import PixelBox
from .conv_vae import ConvVAE, Likelihood
from .data_space import FlowInDataSpace
from .flow import Glow, RealNVP, VectorCouplingFlow
from .glf import GLF, MLPGLF
from .vae import MLPVAE

GENERATORS = {"vae": MLPVAE, "conv-vae": ConvVAE, "pixel-box": PixelBox, "glow": Glow, "realnvp": RealNVP,
              "glf": GLF, "glf-mlp": MLPGLF}

__all__ = ["GENERATORS", "ConvVAE", "FlowInDataSpace", "GLF", "Generator", "Glow", "Likelihood", "MLPGLF", "MLPVAE",
           "PixelBox", "RealNVP", "VectorCouplingFlow"]
