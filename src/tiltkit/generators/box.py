"""PixelBox: the flat "base" of a pixel-space EBM (IGEBM; the tilting paper's "EBM on data").

The base density is uniform on the pixel box [lo, hi]^D of the data's range, so tilting it gives
the plain EBM p(x) ∝ 1[x ∈ box]·exp(−E(x)). In the BaseModel protocol (docs/design.md):
    sample_noise: x ~ U(box)   decode: identity   noise_energy: 0   log_likelihood: −D·log(hi − lo)
Samplers keep chains in the box by clamping (SamplerConfig.clamp). It has no parameters and is
never trained: `tiltkit train tilt --base none` builds one from the data's shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.images import PixelRange
from ..outputs import LossOutput
from ..samplers.noise import Noise
from .base import Capability

BOUNDS = {PixelRange.UNIT: (0.0, 1.0), PixelRange.SYMMETRIC: (-1.0, 1.0)}


class PixelBox(nn.Module):
    image_model = True  # takes (C, H, W) data, not vectors (training.builders.build)
    capabilities = frozenset({Capability.DECODE_MEAN})  # log p_base is one constant: no likelihood to score with

    def __init__(self, data_shape: tuple[int, int, int], pixel_range: str = "unit"):
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.pixel_range = PixelRange(pixel_range)
        self.bounds = BOUNDS[self.pixel_range]
        self.register_buffer("_ref", torch.zeros(()), persistent=False)  # device and dtype of draws

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        lo, hi = self.bounds
        u = torch.rand((n, *self.data_shape), generator=generator, device=self._ref.device, dtype=self._ref.dtype)
        return lo + (hi - lo) * u

    def decode(self, noise: Noise) -> Tensor:
        return noise

    def decode_mean(self, noise: Noise) -> Tensor:
        return noise

    def noise_energy(self, noise: Noise) -> Tensor:
        return noise.new_zeros(noise.shape[0])

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        raise ValueError("a pixel box has nothing to train: use it as the base of a pixel EBM (--base none)")

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """log of the uniform density on the box, (B,): the same for every x inside it."""
        lo, hi = self.bounds
        return x.new_full((x.shape[0],), -x[0].numel() * math.log(hi - lo))
