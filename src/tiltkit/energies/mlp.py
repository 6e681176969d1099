"""MLPEnergy: E_ψ(x) for vectors, an MLP with Swish activations on standardized input.

Optional Fourier features (Tancik et al. 2020): y ↦ [y, sin(2π·yB), cos(2π·yB)] with a fixed
B ~ N(0, s²) of shape (D, F). Toy sets such as 25-Gaussians need wells about 40× narrower
than the data's extent; a plain smooth MLP learns such high frequencies very slowly
(spectral bias), the features make them a few Adam steps away.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import Standardize, mlp


class FourierFeatures(nn.Module):
    """(B, D) -> (B, D + 2F): the input, then sin and cos of 2π·xB for a fixed Gaussian B (D, F)."""

    def __init__(self, dim: int, n_features: int, scale: float, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", scale * torch.randn(dim, n_features, generator=gen))

    def forward(self, x: Tensor) -> Tensor:
        proj = 2 * math.pi * x @ self.freqs
        return torch.cat([x, proj.sin(), proj.cos()], dim=1)


class MLPEnergy(nn.Module):
    """x (B, D) -> E(x) (B,); lower energy = more likely."""

    image_model = False  # takes vectors (training.builders.build)

    def __init__(self, data_dim: int, hidden: int = 256, depth: int = 3, spectral_norm: bool = False,
                 fourier_features: int = 0, fourier_scale: float = 1.0):
        super().__init__()
        self.standardize = Standardize(data_dim)
        self.features = FourierFeatures(data_dim, fourier_features, fourier_scale) if fourier_features else None
        d_in = data_dim + 2 * fourier_features
        self.net = mlp(d_in, hidden, depth, 1, spectral_norm=spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        y = self.standardize(x)
        if self.features is not None:
            y = self.features(y)
        return self.net(y).squeeze(1)
