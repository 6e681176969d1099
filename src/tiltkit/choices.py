"""Option values the command line checks before torch is loaded (so `tiltkit --help` answers at once):
the precisions, the loggers, the Inception runtimes, the OOD scores and the seed range. The run configs
(config.py) use them from here."""

from __future__ import annotations

import enum

MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; the derived seeds (per rank, per rollback) stay below 2**64


class Precision(str, enum.Enum):
    """A run's arithmetic (precision.py): float32, or bf16/fp16 autocast."""

    FP32 = "32"
    BF16 = "bf16"
    FP16 = "fp16"


class LogBackend(str, enum.Enum):
    """Where a run's step metrics go besides metrics.jsonl (training/board.py)."""

    JSONL = "jsonl"  # metrics.jsonl only
    TENSORBOARD = "tensorboard"  # also RUN/tensorboard event files: scalars, and image runs' sample grids


class InceptionRuntime(str, enum.Enum):
    """How the FID Inception network runs (metrics/features.py)."""

    TORCH = "torch"  # the TorchScript network in PyTorch, float32, eager: the reference (`--exact`)
    ONNX = "onnx"  # the same graph exported to ONNX and run by ONNX Runtime on the CPU, float32


class Score(str, enum.Enum):
    """An OOD score (metrics/ood.py): higher = more in-distribution."""

    ELBO = "elbo"
    IWAE = "iwae"
    REGRET = "regret"  # a VAE's likelihood regret
    ENERGY = "energy"
    TILTED = "tilted"
    TEXTURE = "texture"  # a Denoising-EBM's −U_c(x, σ = 0.05)
    COMPLEXITY = "complexity"  # log p(x) + L(x)·ln 2
    MULTISCALE = "multiscale"  # mixture log-density of the denoising errors at several σ
    COMBINED = "combined"  # mixture log-density of all the run's statistics
