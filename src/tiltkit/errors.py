"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: a wrong file, name, option or run directory."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite energy, loss or gradient; the last good checkpoint is kept."""

    def __init__(self, step: int, what: str):
        super().__init__(f"training diverged at step {step}: non-finite {what}; the last good checkpoint is intact")
        self.step = step
