"""Hamiltonian Monte Carlo on a noise-space energy U(ε) (Neal 2011, "MCMC using Hamiltonian dynamics").

One iteration, per chain:
    1. p ~ N(0, I);  H(ε, p) = U(ε) + ½‖p‖²
    2. L leapfrog steps of size h:  p ← p − (h/2)∇U(ε);  ε ← ε + h·p;  p ← p − (h/2)∇U(ε)
    3. accept (ε', p') with probability min(1, exp(H(ε, p) − H(ε', p')))
The leapfrog map is volume-preserving and reversible, so step 3 leaves exp(−U) invariant.
Cost: L gradient evaluations per iteration (the gradient at the current state is reused).
"""

from __future__ import annotations

import torch

from . import noise as nz
from .langevin import SampleResult, check_positive
from .noise import EnergyFn, Noise


def hmc(
    energy_fn: EnergyFn,
    start: Noise,
    steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
    *,
    n_leapfrog: int = 5,
    return_trajectory: bool = False,
    trajectory_every: int = 1,
) -> SampleResult:
    """Run `steps` HMC iterations of `n_leapfrog` leapfrog steps of size `step_size` from `start`."""
    check_positive(steps=steps, step_size=step_size, n_leapfrog=n_leapfrog, trajectory_every=trajectory_every)
    h = step_size
    x = tuple(t.detach().clone() for t in nz.as_tuple(start))
    trajectory = [nz.clone(start)] if return_trajectory else None
    energy, grad = nz.energy_and_grad(energy_fn, nz.like(start, x))
    accepted = torch.zeros((), device=x[0].device)

    for k in range(1, steps + 1):
        p0 = tuple(nz.randn(t.shape, generator, t) for t in x)  # 1. fresh momentum
        h0 = energy + 0.5 * nz.sq_norm(p0)
        q, g = x, grad
        p = tuple(pi - (h / 2) * gi for pi, gi in zip(p0, g))  # 2. leapfrog
        for step in range(n_leapfrog):
            q = tuple(qi + h * pi for qi, pi in zip(q, p))
            e_new, g = nz.energy_and_grad(energy_fn, nz.like(start, q))
            last = step == n_leapfrog - 1
            p = tuple(pi - (h / 2 if last else h) * gi for pi, gi in zip(p, g))
        h1 = e_new + 0.5 * nz.sq_norm(p)
        u = torch.rand(h0.shape, generator=generator, device=h0.device)
        accept = torch.log(u) < (h0 - h1)  # 3. Metropolis test (NaN proposals are rejected)
        accepted = accepted + accept.float().mean()
        x = nz.as_tuple(nz.select(accept, nz.like(start, q), nz.like(start, x)))
        grad = nz.as_tuple(nz.select(accept, nz.like(start, g), nz.like(start, grad)))
        energy = torch.where(accept, e_new, energy)
        if trajectory is not None and k % trajectory_every == 0:
            trajectory.append(nz.clone(nz.like(start, x)))

    return SampleResult(nz.like(start, x), energy, float(accepted) / steps, trajectory)
