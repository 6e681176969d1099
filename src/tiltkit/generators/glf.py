"""GLF: the generative latent flow (Xiao, Yan & Amit 2019), the tilting paper's "AE + flow" base.

A deterministic autoencoder z = e(x) (B, d), x̂ = g(z), and a RealNVP-style flow ε = f(z) on its
latent (flow.VectorCouplingFlow; the paper's 4 affine couplings of one 256-unit layer each), with base
ε ~ N(0, I_d):

    log p_f(z) = log N(f(z); 0, I) + log|det ∂f/∂z|
    loss(x)    = mean[ rec(x, g(e(x))) ] + β·mean[ −log p_f(sg(e(x))) ]        (nats)

sg = stop-gradient: the flow's NLL trains the flow only, never the encoder (GLF paper: without it
the encoder shrinks its latents to make the flow's density arbitrarily high). Two variants:
- GLF (images, "glf"): conv encoder/decoder as ConvVAE's (nets.image_encoder / image_decoder), data in
  [0, 1] (`pixel_range` UNIT), rec = Σ_pixels BCE(logits, x) with gray values as soft targets, and
  x̂ = sigmoid(g(z)).
- MLPGLF (points, "glf-mlp"; the toy sets): MLP encoder/decoder on standardized data (fitted by
  training, as MLPVAE), rec = ½‖g(e(y)) − y‖² in standardized units y.

BaseModel protocol: noise ε (B, d); decode(ε) = x̂(f⁻¹(ε)); noise_energy ½‖ε‖².
log_likelihood(x) = log p_f(e(x)) is a density of the *latent code* of x, not of x: it is what the
model offers for OOD scores, and is not comparable with a VAE's ELBO or a flow's log p(x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.images import PixelRange
from ..nn import Standardize, mlp
from ..outputs import LossOutput
from ..samplers import noise as nz
from ..samplers.noise import Noise
from .base import Capability
from .flow import VectorCouplingFlow, gaussian_log_prob
from .nets import image_decoder, image_encoder, split_size


class LatentFlowAE(nn.Module):
    """What both variants share: the latent flow, the protocol and the GLF loss. Subclasses set
    self.encoder / self.decoder and define `code(x)`, `reconstruct(z)` and `reconstruction_loss(x, z)`."""

    capabilities = frozenset({Capability.TRAINABLE, Capability.LIKELIHOOD, Capability.ENCODE, Capability.DECODE_MEAN})

    def __init__(self, latent_dim: int, n_couplings: int, hidden: int, beta: float):
        super().__init__()
        self.latent_dim, self.beta = latent_dim, beta
        self.flow = VectorCouplingFlow(latent_dim, n_couplings, hidden, n_hidden_layers=1)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)  # device and dtype of draws

    # -- the BaseModel protocol -------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Noise:
        """ε ~ N(0, temperature²·I), (n, d)."""
        return temperature * nz.randn((n, self.latent_dim), generator, self._ref)

    def decode(self, noise: Noise) -> Tensor:
        """ε (B, d) -> x̂(f⁻¹(ε)), (B, *data_shape)."""
        return self.reconstruct(self.flow.inverse(noise))

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
        return self.flow(self.code(x))[0]

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        """Reconstruction + β·flow NLL of the stop-gradient latent, both summed per example, batch mean."""
        z = self.code(x)
        recon = self.reconstruction_loss(x, z).mean()
        flow_nll = -self.latent_log_prob(z.detach()).mean()
        loss = recon + self.beta * flow_nll
        return LossOutput(loss, {"loss": loss.item(), "recon": recon.item(), "flow_nll": flow_nll.item()})

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """log p_f(e(x)), (B,) in nats: the flow's density of the latent code, not a density of x."""
        return self.latent_log_prob(self.code(x))

    def latent_log_prob(self, z: Tensor) -> Tensor:
        """log p_f(z) = log N(f(z); 0, I) + log|det ∂f/∂z|, (B,)."""
        eps, logdet = self.flow(z)
        return gaussian_log_prob(eps) + logdet


class GLF(LatentFlowAE):
    image_model = True  # takes (C, H, W) data, not vectors (training.builders.build)

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int = 64, width: int = 32, n_couplings: int = 4,
                 hidden: int = 256, beta: float = 1.0, arch: str = "dcgan", norm: str = "batch"):
        super().__init__(latent_dim, n_couplings, hidden, beta)
        split_size(data_shape)  # validates the shape
        self.data_shape = tuple(int(s) for s in data_shape)
        self.pixel_range = PixelRange.UNIT
        self.encoder = image_encoder(self.data_shape, latent_dim, width, arch, norm)
        self.decoder = image_decoder(self.data_shape, latent_dim, width, arch, norm)

    def code(self, x: Tensor) -> Tensor:
        """z = e(x), (B, d)."""
        return self.encoder(x)

    def reconstruct(self, z: Tensor) -> Tensor:
        """sigmoid(g(z)), (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def reconstruction_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """Σ_pixels BCE(g(z), x), (B,)."""
        return F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").flatten(1).sum(1)


class MLPGLF(LatentFlowAE):
    image_model = False  # takes vectors (training.builders.build)

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: int = 256, depth: int = 3, n_couplings: int = 4,
                 flow_hidden: int = 256, beta: float = 1.0):
        super().__init__(latent_dim, n_couplings, flow_hidden, beta)
        self.data_dim, self.data_shape, self.pixel_range = data_dim, (data_dim,), None
        self.standardize = Standardize(data_dim)
        self.encoder = mlp(data_dim, hidden, depth, latent_dim)
        self.decoder = mlp(latent_dim, hidden, depth, data_dim)

    def code(self, x: Tensor) -> Tensor:
        """z = e((x − shift)/scale), (B, d)."""
        return self.encoder(self.standardize(x))

    def reconstruct(self, z: Tensor) -> Tensor:
        """x̂ = shift + scale·g(z), (B, D) in data units."""
        return self.standardize.inverse(self.decoder(z))

    def reconstruction_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """½‖g(z) − y‖² in standardized units y = (x − shift)/scale, (B,)."""
        return 0.5 * (self.decoder(z) - self.standardize(x)).pow(2).sum(1)
