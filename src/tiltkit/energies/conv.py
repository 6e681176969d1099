"""Convolutional energies E_ψ(x) for images (B, C, H, W) in the model's pixel range -> (B,).

- ConvEnergy (tilting paper B.2, a simplified IGEBM net): 3×3 conv to channels[0], then per stage
  `blocks` residual blocks (SiLU → conv3×3 → SiLU → conv3×3, plus a skip, 1×1 when the width
  changes), a 2×2 average pool between stages, SiLU, global SUM pooling over space, Linear(·, 1).
- SmallConvEnergy (the cheap "[15]-style" net): three stride-2 3×3 convs of widths w, 2w, 4w with
  SiLU, global sum pooling, Linear(4w, 1). Built for speed: Langevin evaluates E and ∇ₓE
  thousands of times per training run.

No BatchNorm anywhere: E(x)[i] depends on x[i] alone, in train and eval mode alike.
`spectral_norm=True` wraps every conv and linear layer in torch's spectral-norm parametrization;
`weight_norm=True` in weight normalization w = g·v/‖v‖ (Salimans & Kingma 2016, eq. 2; VAEBM's
energy), whose g and bias `data_init(x)` sets from a batch of data (their §2.2): each layer in
turn gets pre-activations of zero mean and unit variance per output channel on that batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _wrapper(spectral_norm: bool, weight_norm: bool = False):
    if spectral_norm and weight_norm:
        raise ValueError("choose spectral_norm or weight_norm, not both")
    if spectral_norm:
        return nn.utils.parametrizations.spectral_norm
    return nn.utils.parametrizations.weight_norm if weight_norm else (lambda m: m)


@torch.no_grad()
def data_dependent_init(net: nn.Module, *inputs: Tensor) -> None:
    """Salimans & Kingma (2016) §2.2 for every weight-normalized layer of `net(*inputs)`, in forward order.

    With t = w·x + b the layer's output on the batch, m and s its per-channel mean and std:
    g ← g/s and b ← (b − m)/s, so the new output is (t − m)/s; the hook hands that on, so the
    next layer is initialized on the normalized activations of this one. One forward pass.
    """
    def hook(layer, _inputs, out):
        dims = [0] + list(range(2, out.dim()))  # all but the channel axis
        shape = [1, -1] + [1] * (out.dim() - 2)
        m, s = out.mean(dims), out.std(dims).clamp_min(1e-6)
        g = layer.parametrizations.weight.original0
        g.div_(s.view(-1, *([1] * (g.dim() - 1))))
        layer.bias.sub_(m).div_(s)
        return (out - m.view(shape)) / s.view(shape)

    layers = [m for m in net.modules() if nn.utils.parametrize.is_parametrized(m, "weight")
              and hasattr(m.parametrizations.weight, "original0")]
    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        net(*inputs)
    finally:
        for h in handles:
            h.remove()


def _check_shape(data_shape) -> tuple[int, int, int]:
    if len(data_shape) != 3:
        raise ValueError(f"image shape must be (C, H, W), got {tuple(data_shape)}")
    return tuple(int(s) for s in data_shape)


class EnergyResBlock(nn.Module):
    """SiLU → conv3×3 → SiLU → conv3×3, plus skip (1×1 conv when c_in ≠ c_out)."""

    def __init__(self, c_in: int, c_out: int, spectral_norm: bool = False, weight_norm: bool = False):
        super().__init__()
        wrap = _wrapper(spectral_norm, weight_norm)
        self.body = nn.Sequential(nn.SiLU(), wrap(nn.Conv2d(c_in, c_out, 3, padding=1)),
                                  nn.SiLU(), wrap(nn.Conv2d(c_out, c_out, 3, padding=1)))
        self.skip = nn.Identity() if c_in == c_out else wrap(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class ConvEnergy(nn.Module):
    """x (B, C, H, W) -> E(x) (B,); lower energy = more likely."""

    image_model = True  # takes (C, H, W) data, not vectors (training.builders.build)

    def __init__(self, data_shape: tuple[int, int, int], channels: tuple[int, ...] = (64, 128), blocks: int = 3,
                 spectral_norm: bool = False, weight_norm: bool = False):
        super().__init__()
        c_img = _check_shape(data_shape)[0]
        if not channels or blocks < 1:
            raise ValueError(f"need at least one stage and one block, got channels={channels}, blocks={blocks}")
        wrap = _wrapper(spectral_norm, weight_norm)
        layers: list[nn.Module] = [wrap(nn.Conv2d(c_img, channels[0], 3, padding=1))]
        c = channels[0]
        for j, c_out in enumerate(channels):
            if j > 0:
                layers.append(nn.AvgPool2d(2))
            for _ in range(blocks):
                layers.append(EnergyResBlock(c, c_out, spectral_norm, weight_norm))
                c = c_out
        layers.append(nn.SiLU())
        self.features = nn.Sequential(*layers)
        self.head = wrap(nn.Linear(c, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).sum((2, 3))).squeeze(1)

    def data_init(self, x: Tensor) -> None:
        data_dependent_init(self, x)


class SmallConvEnergy(nn.Module):
    """x (B, C, H, W) -> E(x) (B,): three stride-2 3×3 convs (w, 2w, 4w) + SiLU, sum pool, linear."""

    image_model = True  # takes (C, H, W) data, not vectors (training.builders.build)

    def __init__(self, data_shape: tuple[int, int, int], width: int = 16, spectral_norm: bool = False,
                 weight_norm: bool = False):
        super().__init__()
        c_img = _check_shape(data_shape)[0]
        wrap = _wrapper(spectral_norm, weight_norm)
        chans = [c_img, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [wrap(nn.Conv2d(a, b, 3, stride=2, padding=1)), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = wrap(nn.Linear(4 * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).sum((2, 3))).squeeze(1)

    def data_init(self, x: Tensor) -> None:
        data_dependent_init(self, x)
