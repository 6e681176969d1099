"""Langevin dynamics on a noise-space energy U(ε): ULA, and MALA with a Metropolis correction.

Implements the update of the tilting paper (eq. 3 and eq. 8; VAEBM report eq. 12):

    ε_{k+1} = ε_k − (η/2)·∇U(ε_k) + s·ω_k,   ω_k ~ N(0, I),   s = √η by default,

whose continuous-time limit has stationary density ∝ exp(−U). With `metropolis=True`
the step is a proposal accepted with probability (Roberts & Tweedie 1996, MALA)

    α = min(1, exp(U(ε) − U(ε') + log q(ε | ε') − log q(ε' | ε))),
    q(b | a) = N(b; a − (η/2)·∇U(a), η·I),

which makes exp(−U) exactly invariant. A recipe that decouples the gradient step
from the noise (IGEBM, VAEBM practice) passes `noise_scale`; that chain no longer
targets exp(−U) and is refused with `metropolis=True`.

Where U or ∇U is not finite (a decoder that overflows, e.g. an under-trained Glow inverted far from
its data) the density is taken as zero: a ULA step onto such a state is rejected and the chain stays
where it was, as MALA's acceptance test rejects it (α = 0). Rejections are counted in the result.
A chain must start where U is finite (TiltedModel.sample redraws those that do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import noise as nz
from .noise import EnergyFn, Noise


@dataclass
class SampleResult:
    """What every sampler returns.

    noise: the final state, same structure as the start.
    energy: U at the final state, (B,).
    acceptance_rate: mean Metropolis acceptance over steps and chains (None for ULA).
    trajectory: states every `trajectory_every` steps, start included (None unless asked).
    nonfinite_rejections: ULA steps (chain × step) refused because U or ∇U was not finite there.
    """

    noise: Noise
    energy: Tensor
    acceptance_rate: float | None = None
    trajectory: list[Noise] | None = None
    nonfinite_rejections: int = 0


def finite_rows(energy: Tensor, grad: tuple[Tensor, ...]) -> Tensor:
    """(B,) True where U and every part of ∇U are finite."""
    ok = torch.isfinite(energy)
    for g in grad:
        ok = ok & torch.isfinite(g.flatten(1)).all(1)
    return ok


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite number, got {value}")


def langevin(
    energy_fn: EnergyFn,
    start: Noise,
    steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
    *,
    metropolis: bool = False,
    noise_scale: float | None = None,
    clamp: tuple[float, float] | None = None,
    return_trajectory: bool = False,
    trajectory_every: int = 1,
) -> SampleResult:
    """Run `steps` Langevin steps of size η = `step_size` on `energy_fn` from `start`.

    energy_fn: noise -> U (B,); gradients are taken w.r.t. the noise only.
    start: a tensor (B, ...) or a tuple of them; it is not modified.
    clamp: keep every part inside a box after each step (pixel EBMs); ULA only.
    """
    check_positive(steps=steps, step_size=step_size, trajectory_every=trajectory_every)
    if metropolis and (noise_scale is not None or clamp is not None):
        raise ValueError("metropolis=True needs the exact Langevin proposal: no noise_scale and no clamp")
    drift = step_size / 2  # 1. η/2 in front of ∇U
    scale = math.sqrt(step_size) if noise_scale is None else noise_scale  # 2. s = √η
    x = [t.detach().clone() for t in nz.as_tuple(start)]
    trajectory = [nz.clone(start)] if return_trajectory else None
    if not metropolis:  # 3. ULA: one gradient per step, U alone at the end
        previous, rejected = None, 0
        for k in range(1, steps + 1):
            energy, grad = nz.energy_and_grad(energy_fn, nz.like(start, x))
            if previous is not None:  # 4. a step onto a non-finite U or ∇U is undone (density 0 there)
                x, grad, energy, n_bad = _undo_nonfinite(x, grad, energy, previous)
                rejected += n_bad
            previous = ([xi.clone() for xi in x], grad, energy)
            for xi, gi in zip(x, grad):
                xi.add_(gi, alpha=-drift).add_(nz.randn(xi.shape, generator, xi), alpha=scale)
                if clamp is not None:
                    xi.clamp_(*clamp)
            if trajectory is not None and k % trajectory_every == 0:
                trajectory.append(nz.like(start, [xi.clone() for xi in x]))
        # the gradient at the last state is never used: forward only (steps backward passes, not steps + 1)
        energy = nz.energy_only(energy_fn, nz.like(start, x))
        ok = torch.isfinite(energy)
        if not bool(ok.all()):
            x = list(nz.select(ok, tuple(x), tuple(previous[0])))
            energy, rejected = torch.where(ok, energy, previous[2]), rejected + int((~ok).sum())
        return SampleResult(nz.like(start, x), energy, None, trajectory, rejected)

    # 5. MALA: propose, then accept or reject per chain
    energy, grad = nz.energy_and_grad(energy_fn, nz.like(start, x))
    accepted = torch.zeros((), device=x[0].device)
    for k in range(1, steps + 1):
        mean_fwd = [xi - drift * gi for xi, gi in zip(x, grad)]
        prop = [m + scale * nz.randn(m.shape, generator, m) for m in mean_fwd]
        e_prop, g_prop = nz.energy_and_grad(energy_fn, nz.like(start, prop))
        log_q_fwd = -nz.sq_norm(tuple(p - m for p, m in zip(prop, mean_fwd))) / (2 * step_size)
        log_q_bwd = -nz.sq_norm(tuple(xi - (p - drift * gp) for xi, p, gp in zip(x, prop, g_prop))) / (
            2 * step_size
        )
        log_alpha = energy - e_prop + log_q_bwd - log_q_fwd
        u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device)
        accept = torch.log(u) < log_alpha
        accepted = accepted + accept.float().mean()
        x = list(nz.as_tuple(nz.select(accept, nz.like(start, prop), nz.like(start, x))))
        grad = nz.as_tuple(nz.select(accept, nz.like(start, list(g_prop)), nz.like(start, list(grad))))
        energy = torch.where(accept, e_prop, energy)
        if trajectory is not None and k % trajectory_every == 0:
            trajectory.append(nz.like(start, [xi.clone() for xi in x]))

    return SampleResult(nz.like(start, x), energy, float(accepted) / steps, trajectory)


def _undo_nonfinite(x: list[Tensor], grad: tuple[Tensor, ...], energy: Tensor, previous: tuple):
    """Chains whose new state has a non-finite U or ∇U go back to `previous` = (x, ∇U, U); returns the
    chosen (x, grad, energy) and how many chains went back."""
    ok = finite_rows(energy, grad)
    if bool(ok.all()):
        return x, grad, energy, 0
    return (list(nz.select(ok, tuple(x), tuple(previous[0]))), nz.select(ok, tuple(grad), previous[1]),
            torch.where(ok, energy, previous[2]), int((~ok).sum()))
