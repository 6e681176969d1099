"""Small building blocks shared by the networks: an MLP and a fixed data standardization."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(d_in: int, hidden: int, depth: int, d_out: int, spectral_norm: bool = False) -> nn.Sequential:
    """`depth` hidden layers of width `hidden` with SiLU (Swish) activations, then a linear head."""
    wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [wrap(nn.Linear(d_in if i == 0 else hidden, hidden)), nn.SiLU()]
    layers.append(wrap(nn.Linear(hidden if depth else d_in, d_out)))
    return nn.Sequential(*layers)


class Standardize(nn.Module):
    """x ↦ (x − shift) / scale with per-feature buffers fitted once to training data (saved in the state)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        self.shift.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale

    def inverse(self, y: Tensor) -> Tensor:
        return y * self.scale + self.shift


def fit_standardizers(module: nn.Module, x: Tensor) -> None:
    """Fit every Standardize layer of `module` to training data x (a model without one is left as it is)."""
    for layer in module.modules():
        if isinstance(layer, Standardize):
            layer.fit(x)
