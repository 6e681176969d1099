"""LossOutput: the one return type of every training objective in tiltkit."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class LossOutput:
    """loss: the scalar to minimize; metrics: floats to log; negatives: samples the loss used, if any."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    negatives: Tensor | None = None
