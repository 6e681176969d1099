"""The step loop shared by every trainer: progress bar, metrics log, checkpoints, divergence stop."""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..errors import DivergenceError
from .run import MetricsLog

SHOWN = ("loss", "e_pos", "e_neg", "gap", "accept")  # live figures on the progress bar


def run_steps(first: int, last: int, step_fn: Callable[[int], dict], save: Callable[[int], None],
              log: MetricsLog, checkpoint_every: int, quiet: bool = False, desc: str = "train") -> None:
    """Call step_fn(step) for step = first..last, logging its metrics and saving every `checkpoint_every`.

    A DivergenceError from step_fn propagates without saving, so the last good checkpoint stays.
    """
    bar = tqdm(range(first, last + 1), desc=desc, disable=quiet, initial=first - 1, total=last, leave=False)
    for step in bar:
        metrics = step_fn(step)
        log.write({"step": step, **metrics})
        bar.set_postfix({k: f"{metrics[k]:.3g}" for k in SHOWN if k in metrics}, refresh=False)
        if step % checkpoint_every == 0 or step == last:
            save(step)
    bar.close()


def check_finite(step: int, **values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise DivergenceError(step, name)


def rng_state(*generators: torch.Generator) -> list[torch.Tensor]:
    return [g.get_state() for g in generators]


def set_rng_state(states: list[torch.Tensor], *generators: torch.Generator) -> None:
    for g, s in zip(generators, states):
        g.set_state(s)
