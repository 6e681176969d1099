"""User-facing errors: the CLI prints their message as one line and exits with a code of their own."""

from pathlib import Path


class UserError(Exception):
    """Bad input from the user: a wrong file, name, option or run directory (exit code 2)."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite or exploding energy, loss or gradient; the last good checkpoint is kept
    (exit code 3)."""

    def __init__(self, step: int, what: str):
        super().__init__(f"training diverged at step {step}: {what}; the last good checkpoint is intact")
        self.step, self.what = step, what


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training after a step, with a checkpoint of that step (exit code 130)."""

    def __init__(self, step: int, run_dir: Path):
        super().__init__(f"interrupted: checkpoint of step {step} saved; continue with --resume --out {run_dir}")
        self.step = step
