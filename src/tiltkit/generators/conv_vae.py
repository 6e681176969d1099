"""ConvVAE: a VAE on images (C, H, W) with a DCGAN or ResNet encoder/decoder (tilting paper B.1).

Generative model: z ~ N(0, I_d), x | z ~ p_θ(x | z); encoder q(z | x) = N(m(x), diag s²(x)).
Training minimizes the negative ELBO, summed over pixels and averaged over the batch (nats):
    −ELBO(x) = −E_q[log p_θ(x | z)] + KL(q(z | x) ‖ N(0, I))
Two likelihoods, each with its own pixel range (`pixel_range`; the data must already be in it,
no standardization is fitted):
- "bernoulli" (MNIST / Fashion-MNIST, the paper's BCE loss), x ∈ [0, 1]: the decoder gives logits ℓ(z),
  −log p(x | z) = Σ_pixels BCE-with-logits(ℓ, x). Gray values x ∈ (0, 1) are accepted as soft
  targets (the usual practice; the value is then not a normalized density of continuous x).
  decode(ε_z) = sigmoid(ℓ(ε_z)), the mean image.
- "gaussian" (CIFAR-10, the paper's MSE loss; VAEBM), x ∈ [−1, 1]: x | z ~ N(μ(z), diag σ²) with the
  raw decoder output as μ (no tanh: a tanh would saturate and flatten the Langevin gradient near
  ±1). σ is one value per channel: sigma="learned" trains log σ (clamped below at min_log_sigma),
  sigma="fixed" keeps σ = exp(init_log_sigma) in a buffer (then the loss is a scaled MSE).
  decode(ε_z) = μ(ε_z); with pixel_noise=True the noise is (ε_z, ε_x) and x = μ(ε_z) + σ·ε_x.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.images import PixelRange
from ..outputs import LossOutput
from ..samplers import noise as nz
from ..samplers.noise import Noise
from .base import Capability
from .bounds import LOG_2PI, elbo_loss, vae_log_likelihood
from .nets import image_decoder, image_encoder, split_size


class Likelihood(enum.Enum):
    BERNOULLI = "bernoulli"
    GAUSSIAN = "gaussian"


class ConvVAE(nn.Module):
    image_model = True  # takes (C, H, W) data, not vectors (training.builders.build)

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int = 100, width: int = 32, arch: str = "dcgan",
                 likelihood: str = "bernoulli", sigma: str = "learned", init_log_sigma: float = -2.0,
                 min_log_sigma: float = -6.0, pixel_noise: bool = False, norm: str = "batch"):
        super().__init__()
        split_size(data_shape)  # validates the shape
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim, self.pixel_noise, self.min_log_sigma = latent_dim, pixel_noise, min_log_sigma
        self.likelihood = Likelihood(likelihood)
        if sigma not in ("learned", "fixed"):
            raise ValueError(f"sigma must be 'learned' or 'fixed', got {sigma!r}")
        if self.likelihood is Likelihood.BERNOULLI and pixel_noise:
            raise ValueError("pixel_noise=True needs likelihood='gaussian': a Bernoulli decoder has no "
                             "reparameterizable pixel noise ε_x")
        self.pixel_range = PixelRange.UNIT if self.likelihood is Likelihood.BERNOULLI else PixelRange.SYMMETRIC
        self.capabilities = frozenset({Capability.TRAINABLE, Capability.LIKELIHOOD, Capability.IMPORTANCE_WEIGHTED,
                                       Capability.ENCODE, Capability.DECODE_MEAN}
                                      | ({Capability.PIXEL_NOISE} if self.likelihood is Likelihood.GAUSSIAN else set()))
        self.sigma_mode = sigma
        self.encoder = image_encoder(self.data_shape, 2 * latent_dim, width, arch, norm)
        self.decoder = image_decoder(self.data_shape, latent_dim, width, arch, norm)
        log_sigma = torch.full((self.data_shape[0],), float(init_log_sigma))  # one per channel
        if self.likelihood is Likelihood.GAUSSIAN and sigma == "learned":
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    # -- the BaseModel protocol -------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        ref = self.log_sigma
        eps_z = nz.randn((n, self.latent_dim), generator, ref)
        if not self.pixel_noise:
            return eps_z
        return eps_z, nz.randn((n, *self.data_shape), generator, ref)

    def decode(self, noise: Noise) -> Tensor:
        """ε_z (B, d) -> mean image; (ε_z, ε_x) -> μ(ε_z) + σ·ε_x (Gaussian with pixel_noise)."""
        if isinstance(noise, tuple):
            eps_z, eps_x = noise
            return self.decoder(eps_z) + self.sigma() * eps_x
        out = self.decoder(noise)
        return torch.sigmoid(out) if self.likelihood is Likelihood.BERNOULLI else out

    def noise_energy(self, noise: Noise) -> Tensor:
        return 0.5 * nz.sq_norm(noise)

    # -- VAEBM extras: the decoder mean, the latent of a noise state, the encoder --------
    def decode_mean(self, noise: Noise) -> Tensor:
        """The mean image of p(x | z = ε_z), whatever the pixel noise, (B, C, H, W)."""
        return self.decode(self.latent(noise))

    def latent(self, noise: Noise) -> Tensor:
        """z of a noise state, (B, d): ε_z itself (one latent level, prior N(0, I))."""
        return nz.as_tuple(noise)[0]

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z ~ q(z | x), reparameterized, (B, d)."""
        mean, log_var = self.posterior(x)
        return mean + (0.5 * log_var).exp() * nz.randn(mean.shape, generator, mean)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x) = N(mean, diag exp(log_var)): (mean, log_var), each (B, d)."""
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def log_p_x(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z), (B,) in nats."""
        return -self.reconstruction_nll(x, self.decoder(z))

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        return elbo_loss(self, x, generator)

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None, n_importance: int = 1) -> Tensor:
        """ELBO (n_importance = 1) or the importance-weighted bound of Burda et al. (2016), (B,) in nats."""
        return vae_log_likelihood(self, x, generator, n_importance)

    # -- internals ---------------------------------------------------------------------
    def sigma(self) -> Tensor:
        """Decoder σ broadcastable to (B, C, H, W): (1, C, 1, 1)."""
        return self.log_sigma.clamp_min(self.min_log_sigma).exp().view(1, -1, 1, 1)

    def reconstruction_nll(self, x: Tensor, out: Tensor) -> Tensor:
        """−log p(x | z) summed over pixels, (B,), from the raw decoder output (logits or μ)."""
        if self.likelihood is Likelihood.BERNOULLI:
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        log_sigma = self.log_sigma.clamp_min(self.min_log_sigma).view(1, -1, 1, 1)
        nll = 0.5 * ((x - out) / log_sigma.exp()).pow(2) + log_sigma + 0.5 * LOG_2PI
        return nll.flatten(1).sum(1)
