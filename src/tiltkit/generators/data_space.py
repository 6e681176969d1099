"""FlowInDataSpace: a flow as the base of chains that run in x itself (tilting paper §3.1).

A flow has an exact density, so the tilt p(x) ∝ p_flow(x)·exp(−E(x)) can be sampled directly in data
space with the potential
    U(x) = −log p_flow(x) + E(x),
instead of in the flow's noise space, U(ε) = ½‖ε‖² + E(f⁻¹(ε)) (the two are the same law, pushed
through x = f⁻¹(ε); the paper argues chains mix better in ε). In the BaseModel protocol (docs/design.md):
    sample_noise: x = f⁻¹(ε), ε ~ N(0, I) (chains start on the flow's own samples)
    decode: identity   noise_energy: −log p_flow(x)   log_likelihood: the flow's
For Glow, log p_flow is the density of the dequantized space [0, 1]^D (Glow.log_density); for RealNVP
the exact density of the data. Nothing here is trained: it wraps a trained flow for sampling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..outputs import LossOutput
from ..samplers.noise import Noise
from .base import BaseModel, Capability, require


class FlowInDataSpace(nn.Module):
    capabilities = frozenset({Capability.LIKELIHOOD, Capability.DECODE_MEAN})

    def __init__(self, flow: BaseModel):
        super().__init__()
        require(flow, Capability.EXACT_DENSITY, "sampling in data space (a flow with an exact density: glow, realnvp)")
        self.flow = flow
        self.data_shape, self.pixel_range = flow.data_shape, flow.pixel_range

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        """x = f⁻¹(ε), ε ~ N(0, I): (n, *data_shape), detached."""
        with torch.no_grad():
            return self.flow.decode(self.flow.sample_noise(n, generator))

    def decode(self, noise: Noise) -> Tensor:
        return noise

    def decode_mean(self, noise: Noise) -> Tensor:
        return noise

    def noise_energy(self, noise: Noise) -> Tensor:
        """−log p_flow(x), (B,)."""
        return -self.flow.log_density(noise)

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        raise ValueError("FlowInDataSpace wraps a trained flow for sampling; train the flow itself")

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.flow.log_likelihood(x, generator)
