"""SamplerConfig: which sampler a recipe uses and with what settings, chosen in one place."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from .hmc import hmc
from .langevin import SampleResult, langevin
from .noise import EnergyFn, Noise


class SamplerKind(str, enum.Enum):
    LANGEVIN = "langevin"  # ULA, tilting paper eq. 8
    MALA = "mala"  # Langevin proposal + Metropolis test
    HMC = "hmc"  # leapfrog + Metropolis test


@dataclass
class SamplerConfig:
    """kind, number of steps (HMC: iterations), step size η (HMC: leapfrog h), HMC leapfrog count,
    an optional noise scale decoupled from η and an optional clamp box (ULA only)."""

    kind: SamplerKind = SamplerKind.LANGEVIN
    steps: int = 60
    step_size: float = 0.01
    n_leapfrog: int = 5
    noise_scale: float | None = None
    clamp: tuple[float, float] | None = None  # ULA only: keep states in this box after each step (pixel EBMs)

    def __post_init__(self):
        # `run` and `gradient_evaluations` dispatch on identity (`is`), so a plain name such as
        # "hmc" (equal to SamplerKind.HMC, but not the member) would silently run ULA: coerce it.
        self.kind = SamplerKind(self.kind)
        if self.clamp is not None and self.kind is not SamplerKind.LANGEVIN:
            raise ValueError(f"clamp keeps a ULA chain in a box; {self.kind.value} needs an unclamped target")

    def gradient_evaluations(self) -> int:
        return self.steps * (self.n_leapfrog if self.kind is SamplerKind.HMC else 1)

    def run(self, energy_fn: EnergyFn, start: Noise, generator: torch.Generator | None = None,
            return_trajectory: bool = False, trajectory_every: int = 1) -> SampleResult:
        common = dict(generator=generator, return_trajectory=return_trajectory, trajectory_every=trajectory_every)
        if self.kind is SamplerKind.HMC:
            return hmc(energy_fn, start, self.steps, self.step_size, n_leapfrog=self.n_leapfrog, **common)
        return langevin(energy_fn, start, self.steps, self.step_size, metropolis=self.kind is SamplerKind.MALA,
                        noise_scale=self.noise_scale, clamp=self.clamp, **common)
