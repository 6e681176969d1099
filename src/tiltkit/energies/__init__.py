"""Energy networks E(x) -> (B,)."""

from .mlp import MLPEnergy

ENERGIES = {"mlp": MLPEnergy}

__all__ = ["ENERGIES", "MLPEnergy"]
