"""The step loop shared by every trainer: progress bar, metrics log, checkpoints, divergence stop."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..config import save_yaml
from ..errors import DivergenceError
from .checkpoint import latest_checkpoint, load_checkpoint
from .run import MetricsLog

SHOWN = ("loss", "e_pos", "e_neg", "gap", "accept", "semantic_gap", "texture_gap")  # live figures on the progress bar


def run_steps(first: int, last: int, step_fn: Callable[[int], dict], save: Callable[[int], None],
              log: MetricsLog, checkpoint_every: int, quiet: bool = False, desc: str = "train",
              should_stop: Callable[[], bool] = lambda: False) -> None:
    """Call step_fn(step) for step = first..last, logging its metrics and saving every `checkpoint_every`.

    A DivergenceError from step_fn propagates without saving, so the last good checkpoint stays.
    `should_stop()` true after a step ends the loop there, with a checkpoint of that step.
    Each log line gets `time_s`, the wall seconds since this call started.
    """
    bar = tqdm(range(first, last + 1), desc=desc, disable=quiet, initial=first - 1, total=last, leave=False)
    start = time.perf_counter()
    for step in bar:
        metrics = step_fn(step)
        log.write({"step": step, **metrics, "time_s": round(time.perf_counter() - start, 3)})
        bar.set_postfix({k: f"{metrics[k]:.3g}" for k in SHOWN if k in metrics}, refresh=False)
        stop = should_stop()
        if step % checkpoint_every == 0 or step == last or stop:
            save(step)
        if stop:
            bar.write(f"{desc}: stopped early at step {step}")
            break
    bar.close()


def start_or_resume(out: Path, resume: bool, cfg, kind: str, modules: dict, opt: torch.optim.Optimizer,
                    generators: tuple[torch.Generator, ...], device: torch.device) -> tuple[int, dict | None, MetricsLog]:
    """(first step, checkpoint state or None, metrics log) of a trainer's run directory `out`.

    Resuming loads the latest checkpoint into `modules`, the optimizer and the generators (the caller
    restores the rest of `state`); a new run saves `cfg` as config.yaml of `kind`.
    """
    if not resume:
        save_yaml(cfg, out / "config.yaml", kind)
        return 1, None, MetricsLog(out)
    state = load_checkpoint(latest_checkpoint(out), modules, map_location=device)
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], *generators)
    return state["step"] + 1, state, MetricsLog(out, resume_step=state["step"])


def check_finite(step: int, **values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise DivergenceError(step, name)


def rng_state(*generators: torch.Generator) -> list[torch.Tensor]:
    return [g.get_state() for g in generators]


def set_rng_state(states: list[torch.Tensor], *generators: torch.Generator) -> None:
    for g, s in zip(generators, states):
        g.set_state(s)


class EarlyStopping:
    """Tracks a validation score (lower is better); stops after `patience` evaluations without a new best
    (patience 0: never stops). `update` returns True when the score is a new best."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_step, self.bad = patience, math.inf, 0, 0

    def update(self, step: int, score: float) -> bool:
        if score < self.best:
            self.best, self.best_step, self.bad = score, step, 0
            return True
        self.bad += 1
        return False

    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.bad = state["best"], state["best_step"], state["bad"]
