"""Mixed precision for the trainers: `precision: 32 | bf16 | fp16` of a run config.

- 32: everything in float32 (the default, and every published recipe here).
- bf16: forward passes of the training losses under bfloat16 autocast, on CPU and GPU; weights,
  optimizer state and gradients stay float32. Unadjusted Langevin chains (kind `langevin`) also
  evaluate their energy under bf16 autocast; the chain state, ∇U with respect to it (autograd casts
  it back to the state's float32) and the update ε − (η/2)∇U + √η·ω stay float32, so a step η of 1e-4
  is not lost to rounding. MALA and HMC evaluate U in float32: their Metropolis test compares energy
  differences that bf16's 8-bit mantissa cannot resolve.
- fp16: float16 autocast with a gradient scaler (torch.amp.GradScaler), meant for GPUs (it runs on
  CPU, slowly). Chains run in float32: ∇U of a float16 energy underflows at small step sizes without
  a scaler of its own. A step whose scaled gradient overflows is skipped and the scale lowered, the
  scaler's normal working, so only a non-finite loss counts as divergence there.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable

import torch
from torch import Tensor, nn

from .choices import Precision
from .samplers import SamplerKind


DTYPES = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


class MixedPrecision:
    """Autocast contexts and the scaled optimizer step of one run."""

    def __init__(self, precision: Precision, device: torch.device):
        self.precision, self.device = Precision(precision), device
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision is Precision.FP16)

    @property
    def scaled(self) -> bool:
        return self.scaler.is_enabled()

    def autocast(self):
        """The context of a training loss's forward pass."""
        if self.precision is Precision.FP32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def sampling(self, *kinds: SamplerKind):
        """The context of training chains of sampler `kinds`: bf16 autocast if all are unadjusted Langevin."""
        if self.precision is Precision.BF16 and all(k is SamplerKind.LANGEVIN for k in kinds):
            return self.autocast()
        return contextlib.nullcontext()

    def step(self, opt: torch.optim.Optimizer, parts: Iterable[tuple[Tensor, list[nn.Parameter]]],
             grad_clip: float | None) -> float:
        """One optimizer step where each loss of `parts` gives gradients to its own parameters only (one
        backward each; under DDP the gradients are averaged as they arrive); returns the gradient norm
        before clipping. A non-finite norm never reaches the weights: the step is skipped (the caller
        treats it as divergence, or, scaled, the scaler lowers its scale)."""
        opt.zero_grad(set_to_none=True)
        parts, params = list(parts), []
        for i, (loss, group) in enumerate(parts):
            self.scaler.scale(loss).backward(inputs=group, retain_graph=i < len(parts) - 1)
            params += group
        self.scaler.unscale_(opt)
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf")))
        if self.scaled:
            self.scaler.step(opt)  # skips the step itself when the unscaled gradients are not finite
            self.scaler.update()
        elif math.isfinite(norm):
            opt.step()
        return norm

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)
