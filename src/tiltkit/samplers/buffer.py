"""ReplayBuffer: persistent chains kept in noise space (IGEBM; VAEBM keeps (ε_z, ε_x)).

A draw of n chain starts takes n stored states at random and replaces each, with
probability `reinit_prob`, by a fresh draw from the base's noise distribution; after
the sampler has run, `update` writes the final states back to the same slots.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import noise as nz
from .noise import Noise

NoiseInit = Callable[[int, torch.Generator | None], Noise]  # (n, generator) -> fresh noise


class ReplayBuffer:
    """Fixed-capacity store of noise states.

    init_fn: draws fresh noise, e.g. `base.sample_noise`; fills the buffer at creation.
    """

    def __init__(self, capacity: int, init_fn: NoiseInit, reinit_prob: float = 0.05, generator=None):
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be positive, got {capacity}")
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        self.capacity = capacity
        self.init_fn = init_fn
        self.reinit_prob = reinit_prob
        self.store: tuple[Tensor, ...] = nz.as_tuple(nz.clone(init_fn(capacity, generator)))
        self._structure = init_fn(1, generator)  # tensor or tuple, for rebuilding draws

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Noise, Tensor]:
        """n chain starts (noise, indices): stored states, each reinitialized with prob. reinit_prob."""
        device = self.store[0].device
        idx = torch.randint(self.capacity, (n,), generator=generator, device=device)
        stored = nz.like(self._structure, [t[idx] for t in self.store])
        fresh = self.init_fn(n, generator)
        reinit = torch.rand(n, generator=generator, device=device) < self.reinit_prob
        return nz.select(reinit, fresh, stored), idx

    def update(self, noise: Noise, idx: Tensor) -> None:
        """Write the final chain states back to the slots they were drawn from."""
        for t, new in zip(self.store, nz.as_tuple(noise)):
            t[idx] = new.detach().to(t.dtype)

    def state_dict(self) -> dict[str, Tensor | float]:
        state: dict[str, Tensor | float] = {f"store_{i}": t.clone() for i, t in enumerate(self.store)}
        state["reinit_prob"] = self.reinit_prob
        return state

    def load_state_dict(self, state: dict) -> None:
        parts = [state[f"store_{i}"] for i in range(len(self.store))]
        for old, new in zip(self.store, parts):
            if old.shape != new.shape:
                raise ValueError(f"buffer state has shape {tuple(new.shape)}, this buffer holds {tuple(old.shape)}")
        self.store = tuple(p.to(self.store[0].device).clone() for p in parts)
        self.reinit_prob = float(state["reinit_prob"])
