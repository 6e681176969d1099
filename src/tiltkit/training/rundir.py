"""Run directories, the bottom layer of training: creating one, its metrics log, and finding the checkpoint
a finished run is used from.

    RUN/config.yaml      the resolved options, with the run's `kind` (methods.py)
    RUN/metrics.jsonl    one JSON object per logged step
    RUN/checkpoints/     see checkpoint.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import UserError
from .checkpoint import BEST, latest_checkpoint, read_state
from .distributed import Distributed


def prepare_run_dir(out: Path, resume: bool, dist: Distributed = Distributed()) -> Path:
    """A new empty run directory, or (resume) an existing one that holds a config; rank 0 checks and
    creates it while the other ranks wait."""
    out = Path(out)
    if dist.main:
        if resume and not (out / "config.yaml").is_file():
            raise UserError(f"--resume: {out} is not a tiltkit run directory (no config.yaml)")
        if not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out} already exists and is not empty: choose a new --out, or pass --resume")
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    return out


class MetricsLog:
    """Appends one JSON line per call to RUN/metrics.jsonl (rank 0 only: `enabled`).

    `trim(step)` drops the step lines past `step` (they will be run again: resume, rollback), and a line
    cut short by a kill; event lines ("event" key) are history and stay.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path, self.enabled = Path(run_dir) / "metrics.jsonl", enabled

    def trim(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and ("event" in record or record.get("step", 0) <= step):
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


def config_path(run_dir: Path) -> Path:
    """RUN/config.yaml, with a clear error for a folder that is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a tiltkit run directory (no config.yaml)")
    return run_dir / "config.yaml"


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run is used from: the best by validation if kept, else the latest."""
    best = Path(run_dir) / "checkpoints" / BEST
    return best if (best / "state.pt").is_file() else latest_checkpoint(run_dir)


def data_shape_of(checkpoint: Path) -> tuple[int, ...]:
    """The shape of one example, recorded in a checkpoint's state."""
    try:
        return tuple(int(d) for d in read_state(checkpoint)["data_shape"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"checkpoint {checkpoint} is unreadable or incomplete") from None
