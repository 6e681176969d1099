"""Spectral regularization of an energy: the penalty Σ_l σ_max(W_l) over its conv and linear layers.

VAEBM adds λ_s·Σ_l σ_max(W_l) to the CD loss (their `alpha_s`, 0.2; after Yoshida & Miyato 2017),
with W_l a layer's effective weight (after weight normalization) reshaped to (out, in·k·k), as
spectral normalization measures it. σ_max comes from power iteration:
    v ← Wᵀu/‖Wᵀu‖,  u ← Wv/‖Wv‖,  σ ≈ uᵀWv,
u and v held fixed, so ∂σ/∂W = u vᵀ, the gradient of the top singular value. Each call starts from
the same seeded vectors and runs `iterations` rounds: no state to checkpoint, and a resumed run
computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def weight_matrices(net: nn.Module) -> list[Tensor]:
    """The effective weight of every Conv2d and Linear layer of `net`, as a (out, in·k·k) matrix."""
    return [m.weight.reshape(m.weight.shape[0], -1) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def top_singular_value(w: Tensor, iterations: int = 20) -> Tensor:
    """σ_max(w) of a matrix (m, n) by power iteration from a seeded start; differentiable in w."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(w.shape[0], generator=gen).to(w)
    with torch.no_grad():
        u = u / u.norm()
        for _ in range(iterations):
            v = w.T @ u
            v = v / v.norm().clamp_min(1e-12)
            u = w @ v
            u = u / u.norm().clamp_min(1e-12)
    return u @ w @ v


def spectral_penalty(net: nn.Module, iterations: int = 20) -> Tensor:
    """Σ_l σ_max(W_l) over the conv and linear layers of `net`, a scalar."""
    return torch.stack([top_singular_value(w, iterations) for w in weight_matrices(net)]).sum()
