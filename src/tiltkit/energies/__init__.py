"""Energy networks E(x) -> (B,)."""

from .conv import ConvEnergy, SmallConvEnergy
from .joint import JointConvEnergy
from .mlp import MLPEnergy

ENERGIES = {"mlp": MLPEnergy, "conv": ConvEnergy, "conv-small": SmallConvEnergy, "conv-small-joint": JointConvEnergy}

__all__ = ["ENERGIES", "ConvEnergy", "JointConvEnergy", "MLPEnergy", "SmallConvEnergy"]
