"""Run directories, the bottom layer of training: creating and locking one, its metrics log, and finding
and reading the checkpoint a run is used from.

    RUN/config.yaml      the resolved options, with the run's `kind` (methods.py)
    RUN/metrics.jsonl    one JSON object per logged step
    RUN/checkpoints/     see checkpoint.py
    RUN/.lock            the process training it, while it trains (lock.py)
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

from ..atomic import atomic_write_text
from ..errors import UserError
from .checkpoint import BEST, PREFIX, latest_checkpoint, list_checkpoints, read_state
from .distributed import Distributed
from .lock import LOCK, hold, os_reason, release

T = TypeVar("T")
READ_TRIES = 20  # picks of a run's newest checkpoint while its training rotates them away


def prepare_run_dir(out: Path, resume: bool, dist: Distributed = Distributed()) -> Path:
    """A new empty run directory, or (resume) an existing one that holds a config, locked for this process
    until its training ends (lock.py; released by training.loop); rank 0 checks, creates and locks it while
    the other ranks wait. The lock comes first, so a run in training is refused naming its holder."""
    out = Path(out)
    occupied = f"{out} already exists and is not empty: choose a new --out, or pass --resume"
    if dist.main:
        if resume and not (out / "config.yaml").is_file():
            raise UserError(f"--resume: {out} is not a tiltkit run directory (no config.yaml)")
        if not resume:
            if out.exists() and not out.is_dir():
                raise UserError(f"--out {out} is a file: choose a folder for the run")
            make_dir(out)
        gone = hold(out)
        if not resume and any(p.name != LOCK for p in out.iterdir()):
            release(out)
            raise UserError(occupied)
        if gone is not None:
            print(f"tiltkit: warning: {out} was held by {gone.describe()}, which is gone: taking it over",
                  file=sys.stderr)
    dist.barrier()
    return out


def make_dir(out: Path, what: str = "run directory") -> None:
    """mkdir -p `out`, or one line saying why not (a file, under a file, in a read-only folder, under /proc)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            reason = f"{out} is a file"
        elif exc.errno == errno.ENOTDIR:
            blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), exc.filename)
            reason = f"{blocker} is not a directory"
        elif exc.filename is not None and Path(exc.filename) != out:
            reason = f"{exc.filename}: {os_reason(exc)}"
        else:
            reason = os_reason(exc)
        raise UserError(f"cannot create {what} {out}: {reason}") from None


class MetricsLog:
    """Appends one JSON line per call to RUN/metrics.jsonl (rank 0 only: `enabled`).

    `trim(step)` drops the step lines past `step` (they will be run again: resume, rollback), and a line
    cut short by a kill; event lines ("event" key) are history and stay.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path, self.enabled = Path(run_dir) / "metrics.jsonl", enabled

    def lines(self) -> list[tuple[str, dict]]:
        """(text, record) of every whole line; a line cut short by a kill is left out."""
        out = []
        for line in (self.path.read_text().splitlines() if self.path.is_file() else []):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append((line, record))
        return out

    def steps(self) -> list[dict]:
        """The step lines (events, eval and ood records left out)."""
        return [r for _, r in self.lines() if isinstance(r.get("step"), int) and "event" not in r]

    def trim(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line, record in self.lines() if "event" in record or record.get("step", 0) <= step]
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
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run directory")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a tiltkit run directory (no config.yaml)")
    return run_dir / "config.yaml"


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run is used from: the best by validation if kept, else the latest."""
    best = Path(run_dir) / "checkpoints" / BEST
    return best if (best / "state.pt").is_file() else latest_checkpoint(run_dir)


def trained_steps(run_dir: Path) -> int:
    """The step of a run's newest checkpoint: how far it has trained (0 before its first checkpoint)."""
    found = list_checkpoints(run_dir)
    return int(found[-1].name[len(PREFIX):]) if found else 0


def read_run_checkpoint(run_dir: Path, read: Callable[[Path], T]) -> T:
    """read(run_checkpoint(run_dir)), for a run that may be training meanwhile: its saves rotate old
    checkpoints away (and replace the best), so when the one picked is gone or replaced before `read` is
    done with it, the newest is picked again (READ_TRIES times in all)."""
    tries = 1
    while True:
        checkpoint = run_checkpoint(run_dir)
        picked = identity(checkpoint)
        try:
            return read(checkpoint)
        except (UserError, OSError):
            if tries == READ_TRIES or (picked is not None and identity(checkpoint) == picked):
                raise
        tries += 1


def identity(path: Path) -> int | None:
    """The inode of `path` (None if there is none): a checkpoint renamed into its place is another one."""
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def data_shape_of(checkpoint: Path) -> tuple[int, ...]:
    """The shape of one example, recorded in a checkpoint's state."""
    try:
        return tuple(int(d) for d in read_state(checkpoint)["data_shape"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"checkpoint {checkpoint} is unreadable or incomplete") from None
