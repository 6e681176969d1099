"""The Generator protocol every base model implements (see DESIGN.md, "The one equation").

A base is reparameterized by standard-normal noise, x = T_θ(ε), ε ~ N(0, I); tilting
and sampling only ever use these five methods.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..outputs import LossOutput
from ..samplers.noise import Noise


@runtime_checkable
class Generator(Protocol):
    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        """ε ~ N(0, I): a tensor or a tuple of tensors, batch first."""

    def decode(self, noise: Noise) -> Tensor:
        """x = T_θ(ε), (B, *data_shape), differentiable in the noise."""

    def noise_energy(self, noise: Noise) -> Tensor:
        """−log p(ε) up to a constant, (B,): ½‖ε‖², or 0 for a flat prior."""

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        """The base's own training objective on a batch x."""

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """log p(x) or a lower bound of it (ELBO), (B,)."""
