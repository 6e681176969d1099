"""TiltedModel: a frozen base generator tilted by an energy, p(x) ∝ p_base(x)·exp(−E(x)).

With x = T_θ(ε), ε ~ N(0, I), the tilted density in noise space is (tilting paper eq. 6/8,
VAEBM report eq. 12)

    U(ε) = noise_energy(ε) + E_ψ(T_θ(ε)),     noise_energy(ε) = ½‖ε‖²  (0 for a flat prior),

and every sampler runs on U. `forward` is U, so the model is itself the energy function.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .samplers import SampleResult, SamplerConfig
from .samplers.compiled import CompileMode, compile_energy
from .samplers.noise import EnergyFn, Noise


class TiltedModel(nn.Module):
    def __init__(self, base: nn.Module, energy: nn.Module):
        super().__init__()
        self.base = base
        self.energy = energy
        self._compiled: dict[CompileMode, EnergyFn] = {}

    def forward(self, noise: Noise) -> Tensor:
        """U(ε), (B,)."""
        return self.base.noise_energy(noise) + self.energy(self.base.decode(noise))

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        return self.base.sample_noise(n, generator)

    def decode(self, noise: Noise) -> Tensor:
        return self.base.decode(noise)

    def log_density(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Unnormalized tilted log-density log p_base(x) − E(x) (ELBO in place of log p for a VAE), (B,)."""
        return self.base.log_likelihood(x, generator) - self.energy(x)

    def energy_fn(self, compiled: bool = False, mode: CompileMode = CompileMode.FUSED) -> EnergyFn:
        """U as a function; `compiled=True` gives a torch.compile'd U (samplers.compiled), compiled once per mode."""
        if not compiled:
            return self
        if mode not in self._compiled:
            self._compiled[mode] = compile_energy(self, mode)
        return self._compiled[mode]

    @contextlib.contextmanager
    def frozen(self):
        """No parameter takes part in autograd while sampling: nothing is updated or accumulated."""
        params = [(p, p.requires_grad) for p in self.parameters()]
        for p, _ in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in params:
                p.requires_grad_(flag)

    def sample(self, sampler: SamplerConfig, start: Noise | int, generator: torch.Generator | None = None,
               compiled: bool = False, compile_mode: CompileMode = CompileMode.FUSED,
               return_trajectory: bool = False, trajectory_every: int = 1) -> SampleResult:
        """Run `sampler` on U from `start` (noise, or a count n to start from ε ~ N(0, I))."""
        if isinstance(start, int):
            start = self.sample_noise(start, generator)
        with self.frozen():
            return sampler.run(self.energy_fn(compiled, compile_mode), start, generator, return_trajectory, trajectory_every)
