"""The contrastive-divergence loss every energy in tiltkit is trained with (tilting paper §3.2, eq. 5/7 and
B.2; VAEBM eq. 8; the Denoising-EBM's Algorithm 1, lines 14–17, on per-pixel energies)."""

from __future__ import annotations

from torch import Tensor

from .outputs import LossOutput


def contrastive_loss(e_pos: Tensor, e_neg: Tensor, alpha: float, x_neg: Tensor | None = None) -> LossOutput:
    """loss = mean E(x⁺) − mean E(x⁻) + α·mean(E(x⁺)² + E(x⁻)²), from E(x⁺), E(x⁻) (B,); metrics E(x⁺),
    E(x⁻) and their gap; `x_neg`, the negatives, is carried along."""
    loss = e_pos.mean() - e_neg.mean() + alpha * (e_pos.pow(2) + e_neg.pow(2)).mean()
    ep, en = e_pos.mean().item(), e_neg.mean().item()
    return LossOutput(loss, {"loss": loss.item(), "e_pos": ep, "e_neg": en, "gap": en - ep}, x_neg)
