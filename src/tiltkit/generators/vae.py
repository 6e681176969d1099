"""MLPVAE: a VAE with a Gaussian decoder on vectors (the toy 2-D sets).

Generative model (Kingma & Welling 2014), in standardized units y = (x − shift)/scale:
    z ~ N(0, I_d),   y | z ~ N(μ_θ(z), diag σ²),   σ a learned per-feature parameter.
Encoder q(z | y) = N(m(y), diag s²(y)). Training minimizes the negative ELBO
    −ELBO(x) = −E_q[log p(y | z)] + KL(q(z | y) ‖ N(0, I)) + Σ log scale      (nats)
Noise for tilting: ε_z alone (decode = decoder mean, the latent-EBM setting), or the pair
(ε_z, ε_x) with x = μ(z) + σ·ε_x (the VAEBM setting, `pixel_noise=True`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn import Standardize, mlp
from ..outputs import LossOutput
from ..samplers import noise as nz
from ..samplers.noise import Noise
from .base import Capability
from .bounds import LOG_2PI, elbo_loss, vae_log_likelihood


class MLPVAE(nn.Module):
    capabilities = frozenset({Capability.TRAINABLE, Capability.LIKELIHOOD, Capability.IMPORTANCE_WEIGHTED,
                              Capability.ENCODE, Capability.DECODE_MEAN, Capability.PIXEL_NOISE})
    image_model = False  # takes vectors (training.builders.build)
    pixel_range = None  # points

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: int = 256, depth: int = 3,
                 pixel_noise: bool = False, min_log_sigma: float = -6.0, init_log_sigma: float = -3.0):
        super().__init__()
        self.data_dim, self.latent_dim, self.pixel_noise = data_dim, latent_dim, pixel_noise
        self.data_shape = (data_dim,)
        self.min_log_sigma = min_log_sigma
        self.standardize = Standardize(data_dim)
        self.encoder = mlp(data_dim, hidden, depth, 2 * latent_dim)
        self.decoder = mlp(latent_dim, hidden, depth, data_dim)
        self.log_sigma = nn.Parameter(torch.full((data_dim,), init_log_sigma))  # decoder σ, standardized units

    # -- the BaseModel protocol -------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        ref = self.log_sigma
        eps_z = nz.randn((n, self.latent_dim), generator, ref)
        if not self.pixel_noise:
            return eps_z
        return eps_z, nz.randn((n, self.data_dim), generator, ref)

    def decode(self, noise: Noise) -> Tensor:
        """(B, d) or ((B, d), (B, D)) -> x (B, D) in data units."""
        if isinstance(noise, tuple):
            eps_z, eps_x = noise
            return self.standardize.inverse(self.decoder(eps_z) + self.sigma() * eps_x)
        return self.standardize.inverse(self.decoder(noise))

    def noise_energy(self, noise: Noise) -> Tensor:
        return 0.5 * nz.sq_norm(noise)

    # -- VAEBM extras: the decoder mean, the latent of a noise state, the encoder --------
    def decode_mean(self, noise: Noise) -> Tensor:
        """The mean of p(x | z = ε_z), whatever the pixel noise, (B, D)."""
        return self.decode(self.latent(noise))

    def latent(self, noise: Noise) -> Tensor:
        """z of a noise state, (B, d): ε_z itself."""
        return nz.as_tuple(noise)[0]

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z ~ q(z | x), reparameterized, (B, d)."""
        mean, log_var = self.posterior(x)
        return mean + (0.5 * log_var).exp() * nz.randn(mean.shape, generator, mean)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x) = N(mean, diag exp(log_var)): (mean, log_var), each (B, d)."""
        mean, log_var = self.encoder(self.standardize(x)).chunk(2, dim=1)
        return mean, log_var

    def log_p_x(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) in data units, (B,): the Gaussian in standardized units plus the Jacobian −Σ log scale."""
        log_sigma = self.log_sigma.clamp_min(self.min_log_sigma)
        log_p_y = -0.5 * (((self.standardize(x) - self.decoder(z)) / log_sigma.exp()).pow(2) + 2 * log_sigma
                          + LOG_2PI).sum(1)
        return log_p_y - self.standardize.scale.log().sum()

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        return elbo_loss(self, x, generator)

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None, n_importance: int = 1) -> Tensor:
        """ELBO (n_importance = 1) or the importance-weighted bound of Burda et al. (2016), (B,)."""
        return vae_log_likelihood(self, x, generator, n_importance)

    def sigma(self) -> Tensor:
        return self.log_sigma.clamp_min(self.min_log_sigma).exp()
