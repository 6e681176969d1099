"""Convolutional encoder/decoder networks for images (C, H, W); architectures only, no likelihood math.

Sizes: square images with H = W = s0 · 2^k, s0 ∈ {4, 7}, k ≥ 2 (28 = 7·2², 32 = 4·2³, 64 = 4·2⁴).
The decoder maps z (B, d) to a s0×s0 map and doubles the side k times; the encoder mirrors it.

- "dcgan" (Radford et al. 2016, the tilting paper's B.1 VAEs): transposed 4×4 stride-2 convs with
  BatchNorm + ReLU in the decoder; stride-2 4×4 convs with BatchNorm (not on the first) +
  LeakyReLU(0.2) in the encoder. Channels w·2^(k−1) at s0×s0 down to w at H/2; `width` w = 64
  is the paper-like size, 32 a CPU-cheap one.
- "resnet": pre-activation residual blocks (norm → SiLU → 3×3 conv, twice, plus a skip) with
  nearest-neighbour ×2 upsampling / 2×2 average-pool downsampling, same channel plan.

`norm` is "batch" (the DCGAN default), "group" or "none". With BatchNorm a decoder in train
mode couples the examples of a batch: put it in eval() before sampling or Langevin.
Decoder outputs are raw (no output activation): logits or means, the model decides.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

ARCHS = ("dcgan", "resnet")
NORMS = ("batch", "group", "none")


def split_size(data_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(C, H, W) -> (s0, k) with H = W = s0·2^k, s0 ∈ {4, 7}, k ≥ 2; ValueError otherwise."""
    if len(data_shape) != 3:
        raise ValueError(f"image shape must be (C, H, W), got {tuple(data_shape)}")
    _, h, w = data_shape
    if h != w:
        raise ValueError(f"images must be square, got H={h}, W={w}")
    for s0 in (4, 7):
        k, side = 0, s0
        while side < h:
            side, k = side * 2, k + 1
        if side == h and k >= 2:
            return s0, k
    raise ValueError(f"image side {h} is not supported: it must be 4·2^k or 7·2^k with k ≥ 2 "
                     "(e.g. 16, 28, 32, 56, 64)")


def channel_plan(data_shape: tuple[int, int, int], width: int) -> tuple[int, list[int]]:
    """(s0, channels): channels[i] = width·2^i is the width at side H/2^(i+1), i = 0 … k−1."""
    s0, k = split_size(data_shape)
    return s0, [width * 2 ** i for i in range(k)]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def _check(arch: str, norm: str, width: int) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if width < 1:
        raise ValueError(f"width must be ≥ 1, got {width}")


class DCGANDecoder(nn.Module):
    """z (B, d) -> (B, C, H, W) raw outputs."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, width: int = 32, norm: str = "batch"):
        super().__init__()
        _check("dcgan", norm, width)
        s0, chans = channel_plan(data_shape, width)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, chans[-1], s0, bias=norm == "none"),
                                   _norm(norm, chans[-1]), nn.ReLU()]
        for c_in, c_out in zip(chans[:0:-1], chans[-2::-1]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=norm == "none"), _norm(norm, c_out), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(chans[0], data_shape[0], 4, 2, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class DCGANEncoder(nn.Module):
    """x (B, C, H, W) -> (B, out_dim)."""

    def __init__(self, data_shape: tuple[int, int, int], out_dim: int, width: int = 32, norm: str = "batch"):
        super().__init__()
        _check("dcgan", norm, width)
        s0, chans = channel_plan(data_shape, width)
        layers: list[nn.Module] = [nn.Conv2d(data_shape[0], chans[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none"), _norm(norm, c_out), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(chans[-1], out_dim, s0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class ResBlock(nn.Module):
    """Pre-activation residual block: norm → SiLU → conv3×3 → norm → SiLU → conv3×3, plus skip (1×1 if needed)."""

    def __init__(self, c_in: int, c_out: int, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(_norm(norm, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  _norm(norm, c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class ResNetDecoder(nn.Module):
    """z (B, d) -> (B, C, H, W): s0×s0 map, then k × (residual block, nearest ×2 upsample), then a 3×3 conv."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, width: int = 32, norm: str = "batch"):
        super().__init__()
        _check("resnet", norm, width)
        s0, chans = channel_plan(data_shape, width)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, chans[-1], s0)]
        c = chans[-1]
        for ch in reversed(chans):
            layers += [ResBlock(c, ch, norm), nn.Upsample(scale_factor=2, mode="nearest")]
            c = ch
        layers += [_norm(norm, c), nn.SiLU(), nn.Conv2d(c, data_shape[0], 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class ResNetEncoder(nn.Module):
    """x (B, C, H, W) -> (B, out_dim): 3×3 conv, k × (residual block, 2×2 avg-pool), then an s0×s0 conv."""

    def __init__(self, data_shape: tuple[int, int, int], out_dim: int, width: int = 32, norm: str = "batch"):
        super().__init__()
        _check("resnet", norm, width)
        s0, chans = channel_plan(data_shape, width)
        layers: list[nn.Module] = [nn.Conv2d(data_shape[0], chans[0], 3, padding=1)]
        c = chans[0]
        for ch in chans:
            layers += [ResBlock(c, ch, norm), nn.AvgPool2d(2)]
            c = ch
        layers += [_norm(norm, c), nn.SiLU(), nn.Conv2d(c, out_dim, s0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


def image_decoder(data_shape: tuple[int, int, int], latent_dim: int, width: int = 32, arch: str = "dcgan",
                  norm: str = "batch") -> nn.Module:
    """z (B, latent_dim) -> (B, *data_shape), raw outputs."""
    _check(arch, norm, width)
    cls = DCGANDecoder if arch == "dcgan" else ResNetDecoder
    return cls(tuple(data_shape), latent_dim, width, norm)


def image_encoder(data_shape: tuple[int, int, int], out_dim: int, width: int = 32, arch: str = "dcgan",
                  norm: str = "batch") -> nn.Module:
    """x (B, *data_shape) -> (B, out_dim)."""
    _check(arch, norm, width)
    cls = DCGANEncoder if arch == "dcgan" else ResNetEncoder
    return cls(tuple(data_shape), out_dim, width, norm)
