"""Denoising-EBM networks (Denoising-EBM paper §4.1, Fig. 1): architectures only; the energies and
Algorithm 1 are in tiltkit/denoising.py.

- `UNet`: F(x, c_noise), a U-Net of noise-conditioned residual blocks. Its encoder f_α ends in the
  semantic code z (B, latent_dim), taken from the lowest-resolution features by a linear map and
  standardized across its features (zero mean, unit variance per example, no affine), so codes
  live where Langevin chains started from N(0, I) live. The decoder g_β starts from z and takes
  the encoder's skips (the U-Net "short-cut connections" of §1), concatenated at every scale.
- the semantic decoder h_γ: z -> image is the package's ResNet image decoder (nets.py) with
  GroupNorm, so a chain's samples never couple through batch statistics.

Sizes follow nets.py: square sides 4·2^k or 7·2^k (28, 32, 64, ...). Channels: `width` at full
resolution, then the nets.py plan (width·2^i at side H/2^(i+1)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .nets import channel_plan

N_FREQUENCIES = 16  # Fourier features of the noise level


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class NoiseEmbedding(nn.Module):
    """c_noise (B,) -> (B, dim): [sin, cos](2π·f_j·c_noise), f_j = 2^(j/2) for j < 16, then a 2-layer MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** (torch.arange(N_FREQUENCIES) / 2), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * N_FREQUENCIES, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        angle = 2 * math.pi * c_noise[:, None] * self.freqs
        return self.mlp(torch.cat([angle.sin(), angle.cos()], 1))


class CondResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3, + a per-channel shift from the noise embedding, GroupNorm → SiLU →
    conv3×3 (zero-initialized), plus the skip (1×1 conv where the width changes)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(nn.Module):
    """F(x, c_noise): x (B, C, H, W), c_noise (B,) -> (B, C, H, W); `encode` alone gives the code z (B, d)."""

    def __init__(self, data_shape: tuple[int, int, int], width: int = 32, latent_dim: int = 64):
        super().__init__()
        if width < 1 or latent_dim < 1:
            raise ValueError(f"width and latent_dim must be ≥ 1, got {width} and {latent_dim}")
        s0, chans = channel_plan(data_shape, width)
        self.channels = [width] + chans  # at sides H, H/2, ..., s0
        self.s0, self.latent_dim = s0, latent_dim
        emb = 4 * width
        self.embed = NoiseEmbedding(emb)
        self.stem = nn.Conv2d(data_shape[0], width, 3, padding=1)
        self.down = nn.ModuleList(CondResBlock(c_prev, c, emb)
                                  for c_prev, c in zip([width] + self.channels[:-1], self.channels))
        bottom = self.channels[-1] * s0 * s0
        self.to_code = nn.Linear(bottom, latent_dim)
        self.from_code = nn.Linear(latent_dim, bottom)
        self.up = nn.ModuleList(CondResBlock(c_below + c, c, emb)
                                for c_below, c in zip(self.channels[1:] + [self.channels[-1]], self.channels))
        self.head = nn.Sequential(group_norm(width), nn.SiLU(), nn.Conv2d(width, data_shape[0], 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def encode(self, x: Tensor, c_noise: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """f_α: (z (B, d), skips at sides H … s0, noise embedding)."""
        emb = self.embed(c_noise)
        h, skips = self.stem(x), []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        z = F.layer_norm(self.to_code(h.flatten(1)), (self.latent_dim,))
        return z, skips, emb

    def decode(self, z: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        """g_β: code and skips -> (B, C, H, W)."""
        h = self.from_code(z).view(z.shape[0], self.channels[-1], self.s0, self.s0)
        for i in reversed(range(len(self.up))):
            h = self.up[i](torch.cat([h, skips[i]], 1), emb)
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.head(h)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        z, skips, emb = self.encode(x, c_noise)
        return self.decode(z, skips, emb)
