"""Option values the command line checks before torch is loaded (so `tiltkit --help` answers at once):
the precisions, the loggers and the seed range. The run configs (config.py) use them from here."""

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
