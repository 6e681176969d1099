"""Samplers of a noise-space energy U(ε): they take `energy_fn(noise) -> (B,)` and a start, nothing else."""

from .annealed import AnnealedConfig, annealed_langevin
from .buffer import ReplayBuffer
from .compiled import CompileMode, FusedEnergy, compile_energy
from .config import SamplerConfig, SamplerKind
from .hmc import hmc
from .langevin import SampleResult, langevin
from .noise import EnergyFn, Noise

__all__ = ["AnnealedConfig", "annealed_langevin", "CompileMode", "EnergyFn", "FusedEnergy", "Noise", "ReplayBuffer", "SampleResult", "SamplerConfig", "SamplerKind", "compile_energy", "hmc", "langevin"]
