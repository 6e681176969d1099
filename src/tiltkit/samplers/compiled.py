"""Compiled noise-space energies: U(ε) and ∇_ε U from torch.compile'd graphs.

The eager path (`noise.energy_and_grad`) runs U under autograd and calls
`torch.autograd.grad`: a tape is recorded, then replayed by the autograd engine. Two
compiled alternatives, the faster one depending on the network (BENCHMARKS.md):

  FUSED     (U, ∇U) = torch.func.grad_and_value(ΣU) compiled as one forward graph: no
            tape, no engine, one Dynamo call per gradient; Inductor fuses the elementwise
            work of both passes. Least overhead: the choice for MLPs.
  AUTOGRAD  U compiled, ∇U from the backward graph AOTAutograd derives for it, run by the
            autograd engine. On CPU, Inductor lays out convolutions better in this
            forward/backward pair than in the fused graph: the choice for conv nets.

Parameters are read on every call (not baked in), so a training loop that updates the
energy between chains keeps sampling the current U.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor

from .noise import EnergyFn, Noise


class CompileMode(enum.Enum):
    FUSED = "fused"
    AUTOGRAD = "autograd"


def compile_energy(energy_fn: EnergyFn, mode: CompileMode = CompileMode.FUSED) -> EnergyFn:
    """A compiled `energy_fn` (noise → (B,)) that every sampler accepts in its place."""
    if mode is CompileMode.AUTOGRAD:
        return torch.compile(energy_fn, dynamic=False)  # samplers differentiate it as they do U
    return FusedEnergy(energy_fn)


class FusedEnergy:
    """U and ∇U from one compiled torch.func.grad_and_value graph; samplers call `value_and_grad`.

    Gradients are w.r.t. the noise only: the graph runs under no_grad, so no parameter takes
    part in autograd, whatever its requires_grad.
    """

    def __init__(self, energy_fn: EnergyFn):
        def summed(noise: Noise) -> tuple[Tensor, Tensor]:
            energy = energy_fn(noise)
            return energy.sum(), energy  # chains are independent: ∇ΣU holds each chain's own ∇U

        self._compiled = torch.compile(torch.func.grad_and_value(summed, has_aux=True), dynamic=False)

    def __call__(self, noise: Noise) -> Tensor:
        """U(ε), (B,), from the same graph as `value_and_grad` (one compile, identical values)."""
        return self.value_and_grad(noise)[0]

    def value_and_grad(self, noise: Noise) -> tuple[Tensor, tuple[Tensor, ...]]:
        """U(ε) (B,) and ∇_ε U, one tensor per part of the noise."""
        with torch.no_grad():
            grad, (_, energy) = self._compiled(noise)
        return energy, grad if isinstance(grad, tuple) else (grad,)
