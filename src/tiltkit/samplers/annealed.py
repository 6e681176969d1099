"""Annealed Langevin dynamics on a noise-conditional score (Song & Ermon, NeurIPS 2019, "Generative Modeling
by Estimating Gradients of the Data Distribution", Algorithm 1), the Denoising-EBM's texture stage.

A denoiser trained by L = E‖r(x + σε, σ) − x‖² gives the score of the data blurred at σ (Tweedie; the
Denoising-EBM paper's eq. 2):

    s(x̃, σ) = ∇ log q_σ(x̃) = (r(x̃, σ) − x̃) / σ².

For levels σ_1 > … > σ_L, Algorithm 1 takes T steps at each, with a step that shrinks with σ²:

    α_i = ε · σ_i² / σ_L²,      x ← x + (α_i / 2)·s(x, σ_i) + √α_i · z,   z ~ N(0, I),

so each level's chain targets q_{σ_i} and hands its state to the next, sharper one. The step is stable only
for ε < 4σ_L²: along a direction the denoiser ignores (r locally constant, s = −δ/σ_i²), the distance δ to
its output follows δ ← (1 − ε / (2σ_L²))·δ + noise at every level, which diverges once |1 − ε/(2σ_L²)| ≥ 1;
a larger ε draws a RuntimeWarning (a clamp box then holds the pixels at its edges). `final_denoise` ends
with x ← r(x, σ_L) = x + σ_L²·s(x, σ_L) (the noise of the last level removed; Jolicoeur-Martineau et al.
2021). The score function is evaluated without gradients: a forward pass of the denoiser per step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .langevin import SampleResult

ScoreFn = Callable[[Tensor, Tensor], Tensor]  # (x (B, ...), σ (B,)) -> s(x, σ), the shape of x


@dataclass
class AnnealedConfig:
    """The texture stage's settings: `levels` noise levels from `sigma_start` down to the model's smallest
    (geometric), `steps` per level, the step constant ε (`step_size`: α_L = ε at the last level), the final
    denoising step, and an optional clamp box applied after each step."""

    sigma_start: float = 0.3
    levels: int = 10
    steps: int = 3
    step_size: float = 2e-5
    final_denoise: bool = True
    clamp: tuple[float, float] | None = None

    def __post_init__(self):
        if not (self.sigma_start > 0 and self.levels >= 1 and self.steps >= 1 and self.step_size > 0):
            raise ValueError(f"annealed Langevin needs sigma_start > 0, levels ≥ 1, steps ≥ 1 and step_size > 0, "
                             f"got {self.sigma_start}, {self.levels}, {self.steps}, {self.step_size}")


@torch.no_grad()
def annealed_langevin(score_fn: ScoreFn, x: Tensor, sigmas: Tensor, steps: int, step_size: float,
                      generator: torch.Generator | None = None, final_denoise: bool = True,
                      clamp: tuple[float, float] | None = None, return_trajectory: bool = False,
                      trajectory_every: int = 1) -> SampleResult:
    """Song & Ermon's Algorithm 1 from x (B, ...) over `sigmas` (L,), decreasing; `steps` per level, α_L = step_size.

    Returns a SampleResult whose `noise` is the final x and `energy` the squared score norm ‖s(x, σ_L)‖²·σ_L²
    per chain (a finite stand-in: this sampler has no energy); trajectory: x every `trajectory_every` steps.
    """
    sigma_last = sigmas[-1]
    if step_size >= 4 * float(sigma_last) ** 2:
        warnings.warn(f"step_size {step_size:g} ≥ 4σ_L² = {4 * float(sigma_last) ** 2:g}: annealed Langevin diverges "
                      f"along directions the denoiser ignores (each step scales them by "
                      f"{1 - step_size / (2 * float(sigma_last) ** 2):.2f}); use a step_size below 4σ_L²",
                      RuntimeWarning, stacklevel=2)
    frames, k = ([x.clone()] if return_trajectory else None), 0
    for sigma in sigmas:
        alpha = step_size * float(sigma / sigma_last) ** 2
        level = sigma.expand(len(x))
        for _ in range(steps):
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + alpha / 2 * score_fn(x, level) + alpha ** 0.5 * z
            if clamp is not None:
                x = x.clamp(*clamp)
            k += 1
            if return_trajectory and k % trajectory_every == 0:
                frames.append(x.clone())
    last = sigma_last.expand(len(x))
    score = score_fn(x, last)
    if final_denoise:
        x = x + sigma_last ** 2 * score
        if clamp is not None:
            x = x.clamp(*clamp)
        if return_trajectory:
            frames.append(x.clone())
    energy = (score.flatten(1).pow(2).sum(1) * sigma_last ** 2)
    return SampleResult(x, energy, trajectory=frames)
