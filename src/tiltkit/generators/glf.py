"""GLF: the generative latent flow (Xiao, Yan & Amit 2019), the tilting paper's "AE + flow" base.

A deterministic conv autoencoder z = e(x) (B, d), x̂ = sigmoid(g(z)) (nets.image_encoder /
image_decoder, as in ConvVAE) and a RealNVP-style flow ε = f(z) on its latent (4 affine couplings
with one 256-unit hidden layer each: flow.VectorCouplingFlow), with base ε ~ N(0, I_d):

    log p_f(z) = log N(f(z); 0, I) + log|det ∂f/∂z|
    loss(x)    = mean[ Σ_pixels BCE(g(e(x)), x) ] + β·mean[ −log p_f(sg(e(x))) ]        (nats)

sg = stop-gradient: the flow's NLL trains the flow only, never the encoder (GLF paper: without it
the encoder shrinks its latents to make the flow's density arbitrarily high). Data are in [0, 1]
(`pixel_range` UNIT), gray values as soft BCE targets, like ConvVAE's "bernoulli" likelihood.

Generator protocol: noise ε (B, d); decode(ε) = sigmoid(g(f⁻¹(ε))); noise_energy ½‖ε‖².
log_likelihood(x) = log p_f(e(x)) is a density of the *latent code* of x, not of x: it is what the
model offers for OOD scores, and is not comparable with a VAE's ELBO or a flow's log p(x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.images import PixelRange
from ..outputs import LossOutput
from ..samplers import noise as nz
from ..samplers.noise import Noise
from .flow import VectorCouplingFlow, gaussian_log_prob
from .nets import image_decoder, image_encoder, split_size


class GLF(nn.Module):
    image_model = True  # takes (C, H, W) data, not vectors (training.run.build)

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int = 64, width: int = 32, n_couplings: int = 4,
                 hidden: int = 256, beta: float = 1.0, arch: str = "dcgan", norm: str = "batch"):
        super().__init__()
        split_size(data_shape)  # validates the shape
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim, self.beta = latent_dim, beta
        self.pixel_range = PixelRange.UNIT
        self.encoder = image_encoder(self.data_shape, latent_dim, width, arch, norm)
        self.decoder = image_decoder(self.data_shape, latent_dim, width, arch, norm)
        self.flow = VectorCouplingFlow(latent_dim, n_couplings, hidden, n_hidden_layers=1)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)  # device and dtype of draws

    # -- the Generator protocol -------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Noise:
        """ε ~ N(0, temperature²·I), (n, d)."""
        return temperature * nz.randn((n, self.latent_dim), generator, self._ref)

    def decode(self, noise: Noise) -> Tensor:
        """ε (B, d) -> sigmoid(g(f⁻¹(ε))), (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(self.flow.inverse(noise)))

    def decode_mean(self, noise: Noise) -> Tensor:
        return self.decode(noise)

    def noise_energy(self, noise: Noise) -> Tensor:
        return 0.5 * nz.sq_norm(noise)

    def latent(self, noise: Noise) -> Tensor:
        """The flow's base variable ε itself, (B, d)."""
        return noise

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """ε = f(e(x)), (B, d); deterministic (`generator` is accepted for the VAE's encode signature).

        decode(encode(x)) is the autoencoder's reconstruction of x.
        """
        return self.flow(self.encoder(x))[0]

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        """Reconstruction BCE + β·flow NLL of the stop-gradient latent, both summed per example, batch mean."""
        z = self.encoder(x)
        recon = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").flatten(1).sum(1).mean()
        flow_nll = -self.latent_log_prob(z.detach()).mean()
        loss = recon + self.beta * flow_nll
        return LossOutput(loss, {"loss": loss.item(), "recon": recon.item(), "flow_nll": flow_nll.item()})

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """log p_f(e(x)), (B,) in nats: the flow's density of the latent code, not a density of x."""
        return self.latent_log_prob(self.encoder(x))

    def latent_log_prob(self, z: Tensor) -> Tensor:
        """log p_f(z) = log N(f(z); 0, I) + log|det ∂f/∂z|, (B,)."""
        eps, logdet = self.flow(z)
        return gaussian_log_prob(eps) + logdet
