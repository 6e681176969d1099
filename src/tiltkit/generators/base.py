"""The BaseModel protocol every base implements (see docs/design.md, "The one equation"), and the optional
capabilities a base declares instead of being probed for them.

A base is reparameterized by standard-normal noise, x = T_θ(ε), ε ~ N(0, I); tilting and sampling
only ever use the three methods below. What else a base can do it declares in `capabilities`, and
a feature that needs one asks with `require`, which names the feature and the base when it is missing:

    capability            methods it promises                          features that need it
    TRAINABLE             loss(x, generator) -> LossOutput             tiltkit train base
    LIKELIHOOD            log_likelihood(x, generator) -> (B,)         OOD elbo and tilted scores
    IMPORTANCE_WEIGHTED   log_likelihood(x, generator, n_importance=K) OOD iwae and regret scores, the
                          posterior(x) -> (mean, log_var) (B, d) each, ELBO's two terms in OOD combined
                          log_p_x(x, z) -> log p(x | z) (B,): a VAE
    EXACT_DENSITY         log_density(x) -> exact log p(x), (B,)       chains in data space (--space data)
    ENCODE                encode(x, generator) -> z ~ q(z | x) (B, d),  joint energies E(x, z)
                          latent(noise) -> z (B, d), latent_dim
    DECODE_MEAN           decode_mean(noise) -> (B, *data_shape)       use_mu (VAEBM), compare pictures
    PIXEL_NOISE           a `pixel_noise` switch: noise (ε_z, ε_x)      pixel_noise (VAEBM chains)
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..data.images import PixelRange
from ..errors import UserError
from ..samplers.noise import Noise


class Capability(str, enum.Enum):
    TRAINABLE = "trainable"
    LIKELIHOOD = "likelihood"
    IMPORTANCE_WEIGHTED = "importance-weighted"
    EXACT_DENSITY = "exact-density"
    ENCODE = "encode"
    DECODE_MEAN = "decode-mean"
    PIXEL_NOISE = "pixel-noise"


@runtime_checkable
class BaseModel(Protocol):
    data_shape: tuple[int, ...]  # one example: (D,) points or (C, H, W) images
    pixel_range: PixelRange | None  # images: the range x lives in; None for points
    capabilities: frozenset[Capability]

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        """ε ~ N(0, I) (or the base's own prior): a tensor or a tuple of tensors, batch first."""

    def decode(self, noise: Noise) -> Tensor:
        """x = T_θ(ε), (B, *data_shape), differentiable in the noise."""

    def noise_energy(self, noise: Noise) -> Tensor:
        """−log p(ε) up to a constant, (B,): ½‖ε‖², or 0 for a flat prior."""


def require(base: BaseModel, capability: Capability, feature: str) -> None:
    """Raise a UserError naming `feature` when `base` does not declare `capability`."""
    if capability not in base.capabilities:
        raise UserError(f"{feature} needs a base with the {capability.value!r} capability; "
                        f"{type(base).__name__} does not have it")
