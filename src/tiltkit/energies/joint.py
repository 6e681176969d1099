"""JointConvEnergy: an energy on an image and its latent, E_ψ(x, z) -> (B,) (VAEBM proposal, extension 1).

The tilt becomes h(x, z) ∝ p_θ(x, z)·exp(−E_ψ(x, z)): the energy can correct the decoder
where it depends on z, not only the marginal of x. Architecture: the image branch of
SmallConvEnergy (three stride-2 3×3 convs w, 2w, 4w with SiLU, global sum pooling) gives
h_x (B, 4w); an MLP with SiLU gives h_z (B, hidden) from z (B, d); a linear head reads the
concatenation [h_x, h_z, h_x ⊙ W h_z] — the product term lets z modulate what the image
features cost, which a sum of separate energies E(x) + E(z) could not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .conv import SmallConvEnergy, _wrapper, data_dependent_init


class JointConvEnergy(nn.Module):
    """(x (B, C, H, W), z (B, d)) -> E(x, z) (B,); lower energy = more likely."""

    image_model = True  # takes (C, H, W) data, not vectors (training.builders.build)
    joint = True  # TiltedModel passes z along with x

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, width: int = 16, hidden: int = 128,
                 spectral_norm: bool = False, weight_norm: bool = False):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        self.latent_dim = latent_dim
        wrap = _wrapper(spectral_norm, weight_norm)
        self.image = SmallConvEnergy(data_shape, width, spectral_norm, weight_norm).features
        self.latent = nn.Sequential(wrap(nn.Linear(latent_dim, hidden)), nn.SiLU(),
                                    wrap(nn.Linear(hidden, hidden)), nn.SiLU())
        self.mix = wrap(nn.Linear(hidden, 4 * width))
        self.head = wrap(nn.Linear(8 * width + hidden, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        h_x = self.image(x).sum((2, 3))
        h_z = self.latent(z)
        return self.head(torch.cat([h_x, h_z, h_x * self.mix(h_z)], dim=1)).squeeze(1)

    def data_init(self, x: Tensor, z: Tensor) -> None:
        data_dependent_init(self, x, z)
