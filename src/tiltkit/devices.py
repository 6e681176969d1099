"""Devices: `--device auto` picks cuda, then mps, then cpu; nothing in tiltkit hard-codes "cuda"."""

from __future__ import annotations

import itertools
import os

import torch
from torch import nn

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu. Under torchrun (LOCAL_RANK set), 'auto' and 'cuda' are the
    process's own GPU, cuda:LOCAL_RANK."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    if name == "auto":
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} asked for, but MPS (Apple's GPU) is not available here")
    return device


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for a model with neither)."""
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
