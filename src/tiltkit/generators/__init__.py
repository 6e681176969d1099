"""Base models; each implements the `BaseModel` protocol and declares its optional capabilities."""

from .base import BaseModel, Capability, require
from .box import PixelBox
from .conv_vae import ConvVAE, Likelihood
from .data_space import FlowInDataSpace
from .flow import Glow, RealNVP, VectorCouplingFlow
from .glf import GLF, MLPGLF
from .module_base import ModuleBase
from .vae import MLPVAE

GENERATORS = {"vae": MLPVAE, "conv-vae": ConvVAE, "pixel-box": PixelBox, "glow": Glow, "realnvp": RealNVP,
              "glf": GLF, "glf-mlp": MLPGLF}

__all__ = ["GENERATORS", "BaseModel", "Capability", "ConvVAE", "FlowInDataSpace", "GLF", "Glow", "Likelihood",
           "MLPGLF", "MLPVAE", "ModuleBase", "PixelBox", "RealNVP", "VectorCouplingFlow", "require"]
