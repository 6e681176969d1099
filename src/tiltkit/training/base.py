"""Fit a base generator by minimizing its own loss (a VAE: the negative ELBO) with Adam."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..config import BaseRunConfig
from ..data.images import random_hflip
from ..data.source import DataSource
from ..errors import UserError
from .checkpoint import save_checkpoint
from .loop import check_finite, rng_state, run_steps, start_or_resume
from .run import build_base, prepare_run_dir, resolve_device


def cosine_lr(cfg: BaseRunConfig):
    """Multiplier of cfg.lr at step t (0-based): cosine decay from 1 to lr_final/lr over cfg.steps, times a
    linear warm-up min(1, (t + 1)/warmup_steps) when warmup_steps > 0."""
    floor = cfg.lr_final / cfg.lr
    warm = (lambda t: min(1.0, (t + 1) / cfg.warmup_steps)) if cfg.warmup_steps else (lambda t: 1.0)
    return lambda t: warm(t) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, cfg.steps) / cfg.steps)))


def train_base(cfg: BaseRunConfig, out: Path, resume: bool = False, quiet: bool = False) -> torch.nn.Module:
    """Train the generator of `cfg` into run directory `out`; returns it in eval mode."""
    device = resolve_device(cfg.device)
    source = DataSource.of(cfg)
    shape = tuple(source.images("train").shape) if source.is_image else (source.points("train", 1).shape[1],)
    model = build_base(cfg, shape).to(device)
    x_train = source.tensor("train", cfg.n_train, getattr(model, "pixel_range", None)).to(device)
    if cfg.hflip and not source.is_image:
        raise UserError("hflip: random horizontal flips are for images, not points")
    out = prepare_run_dir(out, resume)  # only once every input has been checked
    if hasattr(model, "standardize"):
        model.standardize.fit(x_train)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr(cfg))
    data_gen = torch.Generator().manual_seed(cfg.seed)
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)

    first, state, log = start_or_resume(out, resume, cfg, "base", {"base": model}, opt, (data_gen, gen), device)
    if state is not None:
        sched.load_state_dict(state["scheduler"])

    def step_fn(step: int) -> dict:
        idx = torch.randint(len(x_train), (cfg.batch_size,), generator=data_gen).to(device)
        x = random_hflip(x_train[idx], data_gen) if cfg.hflip else x_train[idx]
        result = model.loss(x, gen)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
        check_finite(step, loss=result.metrics["loss"], gradient=grad_norm)
        opt.step()
        sched.step()
        return {**result.metrics, "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}

    def save(step: int) -> None:
        save_checkpoint(out, step, {"base": model}, {
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": rng_state(data_gen, gen), "data_shape": list(shape)})

    run_steps(first, cfg.steps, step_fn, save, log, cfg.checkpoint_every, quiet, desc=f"base {cfg.model}")
    return model.eval()
