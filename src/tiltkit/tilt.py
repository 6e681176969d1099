"""TiltedModel: a frozen base generator tilted by an energy, p(x) ∝ p_base(x)·exp(−E(x)).

With x = T_θ(ε), ε ~ N(0, I), the tilted density in noise space is (tilting paper eq. 6/8,
VAEBM report eq. 12)

    U(ε) = noise_energy(ε) + E_ψ(T_θ(ε)),     noise_energy(ε) = ½‖ε‖²  (0 for a flat prior),

and every sampler runs on U. `forward` is U, so the model is itself the energy function.

A joint energy (`energy.joint`, VAEBM proposal) also sees the latent: U(ε) = ½‖ε‖² + E_ψ(T_θ(ε), z(ε)),
with z(ε) = ε_z for a one-level VAE; on data its z is drawn from the encoder q(z | x).
`use_mu` (VAEBM's "decoder mean as negative"): a chain's state is shown as the decoder mean μ(ε_z)
instead of the sample T_θ(ε) = μ(ε_z) + σ·ε_x, in training negatives and output samples alike.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .errors import UserError
from .generators.base import BaseModel, Capability
from .samplers import SampleResult, SamplerConfig
from .samplers import noise as nz
from .samplers.compiled import CompileMode, compile_energy
from .samplers.noise import EnergyFn, Noise


class TiltedModel(nn.Module):
    def __init__(self, base: BaseModel, energy: nn.Module, use_mu: bool = False):
        super().__init__()
        self.base = base
        self.energy = energy
        self.use_mu = use_mu
        self.joint = bool(getattr(energy, "joint", False))
        if self.joint and Capability.ENCODE not in getattr(base, "capabilities", ()):  # a bare module declares none
            raise ValueError(f"a joint energy E(x, z) needs a base with a latent z and an encoder (the "
                             f"{Capability.ENCODE.value!r} capability), not {type(base).__name__}")
        self._compiled: dict[CompileMode, EnergyFn] = {}

    def forward(self, noise: Noise) -> Tensor:
        """U(ε), (B,)."""
        x = self.base.decode(noise)
        e = self.energy(x, self.base.latent(noise)) if self.joint else self.energy(x)
        return self.base.noise_energy(noise) + e

    def data_energy(self, x: Tensor, generator: torch.Generator | None = None, z: Tensor | None = None) -> Tensor:
        """E(x), or E(x, z) for a joint energy with z ~ q(z | x) unless given, (B,)."""
        if not self.joint:
            return self.energy(x)
        return self.energy(x, self.base.encode(x, generator) if z is None else z)

    def pair_energy(self, x_pos: Tensor, x_neg: Tensor, z_pos: Tensor | None = None,
                    z_neg: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(E(x⁺), E(x⁻)), each (B,): the forward of contrastive training, one call per update (under
        DDP, training.distributed.wrap averages its gradients)."""
        return self.data_energy(x_pos, z=z_pos), self.data_energy(x_neg, z=z_neg)

    def output(self, noise: Noise) -> Tensor:
        """The sample a chain state stands for: μ(ε_z) with use_mu, else T_θ(ε), (B, *data_shape)."""
        return self.base.decode_mean(noise) if self.use_mu else self.base.decode(noise)

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        return self.base.sample_noise(n, generator)

    def decode(self, noise: Noise) -> Tensor:
        return self.base.decode(noise)

    def log_density(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Unnormalized tilted log-density log p_base(x) − E(x) (ELBO in place of log p for a VAE), (B,)."""
        return self.base.log_likelihood(x, generator) - self.data_energy(x, generator)

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
        """Run `sampler` on U from `start` (noise, or a count n to start from ε ~ N(0, I)); chains that would
        start where U is not finite start from fresh draws instead (`finite_start`)."""
        if isinstance(start, int):
            start = self.sample_noise(start, generator)
        with self.frozen():
            start = self.finite_start(start, generator)
            return sampler.run(self.energy_fn(compiled, compile_mode), start, generator, return_trajectory, trajectory_every)

    @torch.no_grad()
    def finite_start(self, start: Noise, generator: torch.Generator | None = None, tries: int = 20) -> Noise:
        """`start` with every row the base decodes to non-finite values replaced by a fresh draw of its noise.

        The tilted density is zero where U is not finite (the samplers reject steps there), so a chain
        cannot start there either; this happens with a base whose decoder overflows on part of its prior,
        e.g. an under-trained Glow at temperature 1. Redrawing is rejection sampling from the prior
        restricted to where the decoder is finite. (An energy that is not finite is left alone: that is a
        diverged training, stopped by its own check.) Raises UserError if rows stay non-finite after `tries`
        redraws.
        """
        ok = self._decodes_finite(start)
        for _ in range(tries):
            bad = (~ok).nonzero().flatten()
            if len(bad) == 0:
                return start
            fresh = self.sample_noise(len(bad), generator)
            parts = [t.clone() for t in nz.as_tuple(start)]
            for part, new in zip(parts, nz.as_tuple(fresh)):
                part[bad] = new
            start, ok[bad] = nz.like(start, parts), self._decodes_finite(fresh)
        raise UserError(f"{int((~ok).sum())} of {len(ok)} chains still start where the base decodes to non-finite "
                        f"values after {tries} fresh draws (train the base longer, or check it with `tiltkit "
                        f"sample` on the base run)")

    def _decodes_finite(self, noise: Noise) -> Tensor:
        """(B,) True where the base's noise energy and decoded sample are finite."""
        x = self.base.decode(noise)
        return torch.isfinite(self.base.noise_energy(noise)) & torch.isfinite(x.flatten(1)).all(1)
