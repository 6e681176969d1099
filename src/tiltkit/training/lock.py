"""The lock of a run directory: one process trains a run at a time (under torchrun, rank 0 for the job).

    RUN/.lock    {"pid": …, "host": …, "started": …}   the process that holds the run

The lock is created with O_CREAT|O_EXCL, so of two processes starting on one run exactly one gets it; the
other is refused with one line naming the holder. A lock whose holder is gone (same host, no such PID: it
was SIGKILLed, or the machine restarted) is stale and taken over; one written on another host is never
judged, since its PID means nothing here: the user deletes it. A lock of this very process is left by a
training that failed before its first step, and is taken over too.

The holder deletes the lock when its training ends, however it ends (training.loop), and at the latest
when the interpreter exits. Readers (sample, eval, ood) take no lock: checkpoints are renamed into place
whole, and a reader retries one rotated away under it (rundir.read_run_checkpoint).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from ..errors import UserError

LOCK = ".lock"
WRITE_WAIT_S = 1.0  # how long an empty or partial lock is taken for one its creator is still writing
TAKEOVER_TRIES = 5  # attempts at creating the lock while others take the same stale one over


@dataclass(frozen=True)
class Holder:
    """A process that holds a run, as RUN/.lock records it."""

    pid: int
    host: str
    started: str

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), datetime.now().astimezone().isoformat(timespec="seconds"))

    @property
    def is_this_process(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    @property
    def is_gone(self) -> bool:
        """True only when the holder surely no longer runs: on this host, and no process has its PID."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)  # signal 0 only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:  # it does, as another user's
            pass
        return False

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (since {self.started})"


_held: dict[Path, Holder] = {}  # the locks this process holds, by path


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir).resolve() / LOCK


def hold(run_dir: Path) -> Holder | None:
    """Lock `run_dir` for this process; returns the gone holder whose stale lock it took over, if any.
    Raises UserError naming the holder when another process (possibly on another host) holds it."""
    path, mine = lock_path(run_dir), Holder.me()
    taken_over = None
    for _ in range(TAKEOVER_TRIES):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_holder(path)  # None: released meanwhile
            if holder is not None and not (holder.is_this_process or holder.is_gone):
                raise UserError(f"{run_dir} is being trained by {holder.describe()}; " + (
                    "wait for it to finish, or stop it first" if holder.host == socket.gethostname()
                    else f"if that process is gone, delete {path}")) from None
            if holder is not None:
                remove_stale(path, holder)
                if not holder.is_this_process:
                    taken_over = holder
            continue
        except OSError as exc:
            raise UserError(f"cannot lock run directory {run_dir}: {path}: {os_reason(exc)}") from None
        try:
            with os.fdopen(fd, "w") as f:  # one write: a reader waits WRITE_WAIT_S for it
                f.write(json.dumps(asdict(mine)))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk
            path.unlink(missing_ok=True)
            raise UserError(f"cannot lock run directory {run_dir}: {path}: {os_reason(exc)}") from None
        _held[path] = mine
        return taken_over
    raise UserError(f"cannot lock run directory {run_dir}: other processes keep taking it over; try again")


def os_reason(exc: OSError) -> str:
    """What an OSError says, as the end of a one-line message ("permission denied")."""
    return (exc.strerror or exc.__class__.__name__).lower()


def read_holder(path: Path) -> Holder | None:
    """The holder RUN/.lock names; None when there is no lock (any more). A lock still empty or unreadable
    after WRITE_WAIT_S (its creator died while writing it, or it was edited) is refused with one line."""
    deadline = time.monotonic() + WRITE_WAIT_S
    while True:
        try:
            record = json.loads(path.read_text())
            holder = Holder(int(record["pid"]), str(record["host"]), str(record["started"]))
            if holder.pid > 0:  # os.kill(pid ≤ 0) would signal a process group
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            raise UserError(f"{path} is unreadable: if no process trains {path.parent}, delete it")
        time.sleep(0.05)


def remove_stale(path: Path, holder: Holder) -> None:
    """Delete the lock of `holder` (gone), unless another process has taken it over meanwhile: the check and
    the deletion happen under an flock of the run directory, which every process taking over waits for."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if read_holder(path) == holder:
            path.unlink()
    finally:
        os.close(fd)  # releases the flock


def release(run_dir: Path) -> None:
    """Delete RUN/.lock if this process holds it (and it still names this process: a user who deleted it may
    have let another process take the run)."""
    path = lock_path(run_dir)
    mine = _held.pop(path, None)
    if mine is None:
        return
    try:
        if json.loads(path.read_text()) == asdict(mine):
            path.unlink()
    except (OSError, ValueError):  # deleted or replaced: not this process's any more
        pass


@contextlib.contextmanager
def releasing(run_dir: Path):
    """Release the lock of `run_dir` when the block ends, however it ends."""
    try:
        yield
    finally:
        release(run_dir)


@atexit.register
def release_all() -> None:
    """Let go of every run this process still holds (a training that failed before its first step)."""
    for path in list(_held):
        release(path.parent)
