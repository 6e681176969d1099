"""Fit a base generator by minimizing its own loss (a VAE: the negative ELBO) with Adam; the base Method."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from torch import nn

from ..config import BaseRunConfig
from ..data.source import DataSource
from ..devices import resolve_device
from ..errors import UserError
from ..generators import Capability, require
from ..metrics.ood import Score, likelihood_scores
from ..nn import fit_standardizers
from ..precision import MixedPrecision
from .board import image_preview
from .builders import build_base
from .distributed import Distributed
from .loop import RunState, run_steps
from .method import Method
from .rundir import prepare_run_dir


def cosine_lr(cfg: BaseRunConfig):
    """Multiplier of cfg.lr at step t (0-based): cosine decay from 1 to lr_final/lr over cfg.steps, times a
    linear warm-up min(1, (t + 1)/warmup_steps) when warmup_steps > 0."""
    floor = cfg.lr_final / cfg.lr
    warm = (lambda t: min(1.0, (t + 1) / cfg.warmup_steps)) if cfg.warmup_steps else (lambda t: 1.0)
    return lambda t: warm(t) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, cfg.steps) / cfg.steps)))


def train_base(cfg: BaseRunConfig, out: Path, resume: bool = False, quiet: bool = False,
               dist: Distributed = Distributed()) -> torch.nn.Module:
    """Train the generator of `cfg` into run directory `out` (as rank `dist.rank` of a torchrun job); returns
    it in eval mode."""
    device = resolve_device(cfg.device)
    source = DataSource.of(cfg)
    shape = tuple(source.images("train").shape) if source.is_image else (source.points("train", 1).shape[1],)
    model = build_base(cfg, shape).to(device)
    require(model, Capability.TRAINABLE, f"tiltkit train base --model {cfg.model}")
    x_train = source.tensor("train", cfg.n_train, model.pixel_range).to(device)
    if cfg.hflip and not source.is_image:
        raise UserError("hflip: random horizontal flips are for images, not points")
    out = prepare_run_dir(out, resume, dist)  # only once every input has been checked
    fit_standardizers(model, x_train)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data_gen, gen = dist.generators(cfg.seed, device)
    run = RunState(out, cfg, BASE.kind, BASE.modules(model), opt, data_gen, gen,
                   MixedPrecision(cfg.precision, device), dist, shape,
                   sched=torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr(cfg)), preview=image_preview(BASE, cfg, model))
    first = run.begin(resume)
    objective = dist.wrap(model, "loss", device)
    params = [p for p in model.parameters() if p.requires_grad]

    def step_fn(step: int) -> dict:
        x = dist.draw_batch(x_train, cfg.batch_size, run.data_gen, cfg.hflip)
        with run.amp.autocast():
            result = objective(x, run.gen)
        grad_norm = run.amp.step(opt, [(result.loss.float(), params)], cfg.grad_clip)
        run.check(step, loss=result.metrics["loss"], gradient=grad_norm)
        with warnings.catch_warnings():  # fp16: a step the scaler skipped makes torch warn of the order here
            warnings.simplefilter("ignore", UserWarning)
            run.sched.step()
        return {**result.metrics, "grad_norm": grad_norm, "lr": run.sched.get_last_lr()[0]}

    run_steps(run, first, cfg.steps, step_fn, cfg.checkpoint_every, quiet, desc=f"base {cfg.model}")
    return model.eval()


class BaseMethod(Method):
    """A base run: a generator fitted to data; its samples are its own, x = T(ε), ε ~ N(0, I)."""

    kind = command = "base"
    config_class = BaseRunConfig
    label = "base"

    def check_command_line(self, cfg: BaseRunConfig, given_data: bool) -> None:
        if not given_data:
            raise UserError("train base: --data is required (a toy or image set name, a file or an image folder)")

    def train(self, cfg: BaseRunConfig, out: Path, resume: bool = False, quiet: bool = False,
              dist: Distributed = Distributed()) -> nn.Module:
        return train_base(cfg, out, resume, quiet, dist)

    def build(self, run_dir: Path, cfg: BaseRunConfig, data_shape: tuple[int, ...]) -> nn.Module:
        return build_base(cfg, data_shape)

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"base": model}

    def scores(self, model: nn.Module) -> list[Score]:
        return likelihood_scores(model) + [Score.COMBINED] * (model.pixel_range is not None)

    def describe(self, model: nn.Module) -> str:
        return f"a base run ({type(model).__name__})"


BASE = BaseMethod()
