"""Normalizing flows: Glow on images (Kingma & Dhariwal 2018) and RealNVP on vectors (Dinh et al. 2017).

A flow is an invertible map z = f(y) with a tractable Jacobian, so the density is exact:
    log p(y) = log p_Z(f(y)) + log |det ∂f/∂y|,
and a chain f = f_K ∘ … ∘ f_1 sums the layers' log-determinants. Every layer here has
forward(x) -> (y, logdet (B,)) and inverse(y) -> x; `FlowChain` composes them.

Glow layers, on (B, C, H, W), with log|det| per example:
- ActNorm: y = (x + b)·exp(s), per channel;             log|det| = H·W·Σ_c s_c.
  Data-dependent init on the first training batch: b = −mean, s = −log std, so y has zero
  mean and unit variance per channel; the flag `initialized` is a buffer (saved with the weights).
- InvConv1x1: y = W x at every pixel, W = P·L·(U + diag(sign·exp(log_s))) (LU form; P and
  sign fixed, L unit lower, U strictly upper);           log|det| = H·W·Σ log_s.
- AffineCoupling: x = (x_a, x_b) by channel halves, (t, r) = NN(x_a), σ = sigmoid(r + 2),
  y = (x_a, (x_b + t)·σ);                                 log|det| = Σ log σ.
  NN = conv3×3 → ReLU → conv1×1 → ReLU → zero-initialized conv3×3, so a fresh coupling is a
  fixed scaling by sigmoid(2). Glow's log σ = −softplus(−(r + 2)) has no lower bound, so the inverse's
  1/σ can overflow; the bounded coupling saturates it, log σ = −B·sigmoid(−(r + 2)) ∈ (−B, 0) (forward
  contracting like Glow's, each inverse step magnifying by at most e^B), and the additive one σ = 1.
- Squeeze: (C, H, W) -> (4C, H/2, W/2), each 2×2 patch to channels;  log|det| = 0.

RealNVP layers, on (B, d): VectorCoupling with a binary mask m,
    (r, t) = MLP(m⊙x),  s = (1 − m)⊙γ⊙tanh(r),  y = m⊙x + (1 − m)⊙(x⊙exp(s) + t),  log|det| = Σ s,
with γ a learned per-feature bound on the log-scale; masks alternate between even and odd features.
"""

from __future__ import annotations

import enum

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.images import PixelRange
from ..nn import Standardize, mlp
from ..outputs import LossOutput
from ..samplers import noise as nz
from ..samplers.noise import Noise
from .base import Capability
from .bounds import LOG_2PI


def gaussian_log_prob(z: Tensor, mean: Tensor | float = 0.0, log_std: Tensor | float = 0.0) -> Tensor:
    """log N(z; mean, diag exp(log_std)²) summed over all but the batch dimension, (B,)."""
    log_std = torch.as_tensor(log_std, dtype=z.dtype, device=z.device)
    logp = -0.5 * ((z - mean) * (-log_std).exp()).pow(2) - log_std - 0.5 * LOG_2PI
    return logp.expand_as(z).flatten(1).sum(1)


def zero_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """3×3 convolution (same padding) with zero weights and bias: outputs 0 until trained."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FlowChain(nn.ModuleList):
    """f = f_K ∘ … ∘ f_1: forward sums the layers' log-determinants, inverse runs them backwards."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self):
            y = layer.inverse(y)
        return y


# -- Glow layers ---------------------------------------------------------------------------
class ActNorm(nn.Module):
    """y = (x + b)·exp(s) per channel, (B, C, H, W); log|det| = H·W·Σ s."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.zeros(()))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set b, s so that this batch comes out with zero mean and unit variance per channel."""
        dims = (0, 2, 3)
        self.bias.copy_(-x.mean(dims, keepdim=True))
        self.log_scale.copy_(-(x.var(dims, unbiased=False, keepdim=True).sqrt() + 1e-6).log())
        self.initialized.fill_(1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            self.initialize(x)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return (x + self.bias) * self.log_scale.exp(), logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * (-self.log_scale).exp() - self.bias


class InvConv1x1(nn.Module):
    """y = W x per pixel, W = P·L·(U + diag(sign·exp(log_s))); log|det| = H·W·Σ log_s.

    Initialized at a random rotation (QR of a Gaussian matrix, drawn from the global RNG like every
    nn layer's weights; training.builders.build seeds it), so log|det W| = 0 at the start.
    """

    def __init__(self, channels: int):
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        perm, lower, upper = torch.linalg.lu(rotation)
        s = upper.diagonal()
        self.register_buffer("perm", perm)
        self.register_buffer("sign_s", s.sign())
        self.lower = nn.Parameter(lower.tril(-1))  # only the strictly lower part is used
        self.upper = nn.Parameter(upper.triu(1))  # only the strictly upper part is used
        self.log_s = nn.Parameter(s.abs().log())

    def weight(self) -> Tensor:
        """W (C, C)."""
        eye = torch.eye(self.log_s.shape[0], dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign_s * self.log_s.exp())
        return self.perm @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weight()
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()
        return F.conv2d(x, w[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])


class Coupling(str, enum.Enum):
    """Glow's coupling: `affine` scales and shifts (Glow's default, σ = sigmoid(r + 2) ∈ (0, 1)); `bounded`
    scales by σ = exp(−B·sigmoid(−(r + 2))) ∈ (e^−B, 1), so one inverse step magnifies by at most e^B; `additive`
    only shifts (NICE; Glow paper §3.3), volume-preserving. A two-sided bound, log σ = B·tanh(r / B), was
    tried first: its forward pass may expand by e^B per coupling, and its training diverged (BENCHMARKS.md)."""

    AFFINE = "affine"
    BOUNDED = "bounded"
    ADDITIVE = "additive"


SCALE_BOUND = 2.0  # B of the bounded coupling: −2 < log σ < 0 per coupling


class AffineCoupling(nn.Module):
    """(x_a, x_b) -> (x_a, (x_b + t)·σ), (t, r) = NN(x_a); log|det| = Σ log σ, with log σ by `coupling`:
    affine logsigmoid(r + 2), bounded −B·sigmoid(−(r + 2)), additive 0 (no r)."""

    def __init__(self, channels: int, hidden: int, coupling: Coupling | str = Coupling.AFFINE):
        super().__init__()
        self.n_cond = channels // 2
        self.coupling = Coupling(coupling)
        n_out = channels - self.n_cond
        self.net = nn.Sequential(nn.Conv2d(self.n_cond, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                 zero_conv(hidden, n_out if self.coupling is Coupling.ADDITIVE else 2 * n_out))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_a, x_b, t, log σ)."""
        x_a, x_b = x[:, :self.n_cond], x[:, self.n_cond:]
        if self.coupling is Coupling.ADDITIVE:
            shift = self.net(x_a)
            return x_a, x_b, shift, torch.zeros_like(shift)
        shift, raw = self.net(x_a).chunk(2, dim=1)
        if self.coupling is Coupling.BOUNDED:
            return x_a, x_b, shift, -SCALE_BOUND * torch.sigmoid(-(raw + 2.0))
        return x_a, x_b, shift, F.logsigmoid(raw + 2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b, shift, log_scale = self._split(x)
        return torch.cat([x_a, (x_b + shift) * log_scale.exp()], 1), log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b, shift, log_scale = self._split(y)
        return torch.cat([y_a, y_b * (-log_scale).exp() - shift], 1)


class Squeeze(nn.Module):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): channel 4c + 2i + j holds pixel (2h + i, 2w + j) of channel c."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c, h, w = y.shape
        return y.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


# -- Glow ----------------------------------------------------------------------------------
class Glow(nn.Module):
    """Multi-scale Glow on images in [0, 1] (tilting paper B.1: 2 blocks of 16 steps, hidden 64, on MNIST).

    Block i = squeeze, then `n_couplings` steps of [ActNorm, InvConv1x1, coupling (`coupling`: affine,
    bounded or additive: see Coupling)]; after every
    block but the last, half the channels leave as z_i with the conditional prior
    N(μ_i(h), σ_i(h)) from a zero-initialized conv of the kept half h; the last block's output
    z_top has a learned N(μ, σ) per position (learn_top) or N(0, I). For 1×28×28 and 2 blocks:
    z_0 (2, 14, 14), z_top (8, 7, 7).

    Data: x = k/255 from the loaders. `loss` and `log_likelihood` take k = round(x·(2^n − 1)) and
    dequantize, x̃ = (k + u)/2^n, u ~ U(0, 1)^D (n = n_bits); the flow models y = x̃ − 0.5:
        log p(x̃) = Σ_i log N(z_i; μ_i, σ_i) + Σ_layers log|det|
        log P(k) ≥ E_u[log p(x̃)] − D·n·log 2        (log_likelihood: one-u estimate, nats)
        bits/dim = −(log p(x̃) − D·n·log 2) / (D·log 2)   (the training loss, averaged over the batch)
    Noise is standardized per scale, ε_i = (z_i − μ_i)/σ_i ~ N(0, I): a tuple (ε_0, …, ε_top).
    decode(ε) runs top-down (μ_i depends on the already decoded kept half) and returns
    x = f⁻¹(z) + 0.5, unclamped by default so that it stays differentiable in ε everywhere. With
    `clamp_output` it returns clamp(x, 0, 1), the image the samples are quantized to anyway: an energy
    tilting the Glow then sees only images in the pixel box (its gradient vanishes outside), so noise-space
    chains cannot lower E by pushing pixels out of range. Training and densities never use decode.
    """

    image_model = True  # takes (C, H, W) data, not vectors (training.builders.build)
    capabilities = frozenset({Capability.TRAINABLE, Capability.LIKELIHOOD, Capability.EXACT_DENSITY,
                              Capability.DECODE_MEAN})

    def __init__(self, data_shape: tuple[int, int, int], n_blocks: int = 2, n_couplings: int = 16, hidden: int = 64,
                 n_bits: int = 8, learn_top: bool = True, coupling: Coupling | str = Coupling.AFFINE,
                 clamp_output: bool = False):
        super().__init__()
        if len(data_shape) != 3:
            raise ValueError(f"image shape must be (C, H, W), got {tuple(data_shape)}")
        c, h, w = (int(s) for s in data_shape)
        if min(n_blocks, n_couplings, hidden) < 1:
            raise ValueError(f"n_blocks, n_couplings and hidden must be ≥ 1, got {n_blocks}, {n_couplings}, {hidden}")
        if h % 2 ** n_blocks or w % 2 ** n_blocks:
            raise ValueError(f"Glow with {n_blocks} blocks halves H and W {n_blocks} times: they must be divisible "
                             f"by {2 ** n_blocks}, got H={h}, W={w}")
        if not 1 <= n_bits <= 8:
            raise ValueError(f"n_bits must be in 1..8, got {n_bits}")
        self.data_shape, self.n_bits, self.clamp_output = (c, h, w), n_bits, clamp_output
        self.pixel_range = PixelRange.UNIT
        self.blocks, self.priors = nn.ModuleList(), nn.ModuleList()
        self.noise_shapes: list[tuple[int, int, int]] = []
        for i in range(n_blocks):
            c, h, w = 4 * c, h // 2, w // 2
            layers: list[nn.Module] = [Squeeze()]
            for _ in range(n_couplings):
                layers += [ActNorm(c), InvConv1x1(c), AffineCoupling(c, hidden, coupling)]
            self.blocks.append(FlowChain(layers))
            if i < n_blocks - 1:
                c_out = c // 2
                c -= c_out
                self.priors.append(zero_conv(c, 2 * c_out))
                self.noise_shapes.append((c_out, h, w))
        self.noise_shapes.append((c, h, w))
        self.top = nn.Parameter(torch.zeros(2 * c, h, w)) if learn_top else None  # (μ, log σ) of z_top
        self.register_buffer("_ref", torch.zeros(()), persistent=False)  # device and dtype of draws

    # -- the BaseModel protocol -------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Noise:
        """(ε_0, …, ε_top) ~ N(0, temperature²·I), shapes (n, *noise_shapes[i])."""
        return tuple(temperature * nz.randn((n, *shape), generator, self._ref) for shape in self.noise_shapes)

    def decode(self, noise: Noise) -> Tensor:
        """ε tuple -> x = f⁻¹(z) + 0.5, (B, C, H, W), with z_i = μ_i + σ_i·ε_i decoded top-down."""
        eps = nz.as_tuple(noise)
        mean, log_std = self._top_prior(eps[-1])
        h = mean + log_std.exp() * eps[-1]
        for i in reversed(range(len(self.blocks))):
            if i < len(self.priors):
                mean, log_std = self.priors[i](h).chunk(2, dim=1)
                h = torch.cat([h, mean + log_std.exp() * eps[i]], 1)
            h = self.blocks[i].inverse(h)
        return (h + 0.5).clamp(0, 1) if self.clamp_output else h + 0.5

    def decode_mean(self, noise: Noise) -> Tensor:
        return self.decode(noise)

    def noise_energy(self, noise: Noise) -> Tensor:
        return 0.5 * nz.sq_norm(noise)

    def latent(self, noise: Noise) -> Tensor:
        """The noise flattened and concatenated, (B, D)."""
        return torch.cat([t.flatten(1) for t in nz.as_tuple(noise)], 1)

    def encode(self, x: Tensor) -> tuple[Tensor, ...]:
        """The noise ε of an image x (B, C, H, W): decode(encode(x)) = x."""
        zs, priors, _ = self.flow(x - 0.5)
        return tuple((z - mean) * (-log_std).exp() for z, (mean, log_std) in zip(zs, priors))

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        """Mean bits/dim of the dequantized batch."""
        loss = self.bits_per_dim(x, generator).mean()
        return LossOutput(loss, {"loss": loss.item(), "bits_per_dim": loss.item()})

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """log p(x̃) − D·n_bits·log 2, a one-sample estimate of the bound on log P(k), (B,) in nats."""
        x_tilde = self.dequantize(x, generator)
        return self.log_density(x_tilde) - x[0].numel() * self.n_bits * math.log(2)

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """−log_likelihood / (D·log 2), (B,)."""
        return -self.log_likelihood(x, generator) / (x[0].numel() * math.log(2))

    # -- the exact density of dequantized data ---------------------------------------------
    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x̃ = (k + u)/2^n, k = round(x·(2^n − 1)), u ~ U(0, 1) from `generator`, (B, C, H, W)."""
        levels = 2 ** self.n_bits
        k = (x * (levels - 1)).round().clamp(0, levels - 1)
        return (k + torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)) / levels

    def log_density(self, x: Tensor) -> Tensor:
        """log p(x) of continuous x (B, C, H, W) ∈ [0, 1]^D: Σ_i log N(z_i; μ_i, σ_i) + log|det|, (B,)."""
        zs, priors, logdet = self.flow(x - 0.5)
        return logdet + sum(gaussian_log_prob(z, mean, log_std) for z, (mean, log_std) in zip(zs, priors))

    def flow(self, y: Tensor) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]], Tensor]:
        """y (B, C, H, W) -> ([z_0, …, z_top], [(μ_i, log σ_i)], Σ log|det| (B,))."""
        zs, priors = [], []
        h, logdet = y, y.new_zeros(y.shape[0])
        for i, block in enumerate(self.blocks):
            h, ld = block(h)
            logdet = logdet + ld
            if i < len(self.priors):
                h, z = h.split([h.shape[1] - self.noise_shapes[i][0], self.noise_shapes[i][0]], 1)
                zs.append(z)
                priors.append(self.priors[i](h).chunk(2, dim=1))
        zs.append(h)
        priors.append(self._top_prior(h))
        return zs, priors, logdet

    def _top_prior(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ) of z_top, broadcastable to it."""
        if self.top is None:
            zero = like.new_zeros(())
            return zero, zero
        return self.top.chunk(2, dim=0)


# -- RealNVP on vectors ----------------------------------------------------------------------
class VectorCoupling(nn.Module):
    """y = m⊙x + (1 − m)⊙(x⊙exp(s) + t), (r, t) = MLP(m⊙x), s = (1 − m)⊙γ⊙tanh(r); log|det| = Σ s.

    The MLP's last layer starts at zero, so a fresh coupling is the identity.
    """

    def __init__(self, mask: Tensor, hidden: int, n_hidden_layers: int):
        super().__init__()
        dim = mask.shape[0]
        self.register_buffer("mask", mask.float())
        self.net = mlp(dim, hidden, n_hidden_layers, 2 * dim)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(dim))  # γ, the bound on |s|

    def _log_scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(x * self.mask).chunk(2, dim=1)
        free = 1 - self.mask
        return free * self.scale * torch.tanh(raw), free * shift

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_shift(x)
        return x * log_scale.exp() + shift, log_scale.sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        log_scale, shift = self._log_scale_shift(y)  # m⊙y = m⊙x: the same (s, t)
        return (y - shift) * (-log_scale).exp()


class VectorCouplingFlow(FlowChain):
    """n_couplings VectorCouplings on (B, dim), masks alternating even / odd features (dim 2: x₀ | x₁)."""

    def __init__(self, dim: int, n_couplings: int, hidden: int, n_hidden_layers: int):
        if dim < 2:
            raise ValueError(f"a coupling flow needs dim ≥ 2 (one part conditions the other), got {dim}")
        parity = torch.arange(dim) % 2
        super().__init__([VectorCoupling(parity == k % 2, hidden, n_hidden_layers) for k in range(n_couplings)])


class RealNVP(nn.Module):
    """RealNVP on points (B, D) in standardized units y = (x − shift)/scale (fitted by training):

        z = f(y),  z ~ N(0, I),  log p(x) = log N(f(y); 0, I) + log|det ∂f/∂y| − Σ log scale   (nats)
    Noise ε = z (B, D); decode(ε) = shift + scale·f⁻¹(ε); the loss is the mean −log p(x).
    """

    capabilities = frozenset({Capability.TRAINABLE, Capability.LIKELIHOOD, Capability.EXACT_DENSITY,
                              Capability.DECODE_MEAN})
    image_model = False  # takes vectors (training.builders.build)
    pixel_range = None  # points

    def __init__(self, dim: int, n_couplings: int = 8, hidden: int = 128, n_hidden_layers: int = 2):
        super().__init__()
        self.dim, self.data_shape = dim, (dim,)
        self.standardize = Standardize(dim)
        self.flow = VectorCouplingFlow(dim, n_couplings, hidden, n_hidden_layers)

    # -- the BaseModel protocol -------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Noise:
        return temperature * nz.randn((n, self.dim), generator, self.standardize.shift)

    def decode(self, noise: Noise) -> Tensor:
        """ε (B, D) -> x (B, D) in data units."""
        return self.standardize.inverse(self.flow.inverse(noise))

    def decode_mean(self, noise: Noise) -> Tensor:
        return self.decode(noise)

    def noise_energy(self, noise: Noise) -> Tensor:
        return 0.5 * nz.sq_norm(noise)

    def latent(self, noise: Noise) -> Tensor:
        return noise

    def encode(self, x: Tensor) -> Tensor:
        """ε = f((x − shift)/scale), (B, D): decode(encode(x)) = x."""
        return self.flow(self.standardize(x))[0]

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        loss = -self.log_likelihood(x).mean()
        return LossOutput(loss, {"loss": loss.item()})

    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Exact log p(x) in data units, (B,)."""
        return self.log_density(x)

    def log_density(self, x: Tensor) -> Tensor:
        """log p(x) = log N(f(y); 0, I) + log|det ∂f/∂y| − Σ log scale, y = (x − shift)/scale, (B,)."""
        z, logdet = self.flow(self.standardize(x))
        return gaussian_log_prob(z) + logdet - self.standardize.scale.log().sum()
