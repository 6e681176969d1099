"""Fit a base generator by minimizing its own loss (a VAE: the negative ELBO) with Adam."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..config import BaseRunConfig, save_yaml
from ..data.toy import toy_split
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .loop import check_finite, rng_state, run_steps, set_rng_state
from .run import MetricsLog, build_base, prepare_run_dir, resolve_device


def cosine_lr(cfg: BaseRunConfig):
    """Multiplier of cfg.lr at step t: cosine decay from 1 to lr_final/lr over cfg.steps."""
    floor = cfg.lr_final / cfg.lr
    return lambda t: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, cfg.steps) / cfg.steps))


def train_base(cfg: BaseRunConfig, out: Path, resume: bool = False, quiet: bool = False) -> torch.nn.Module:
    """Train the generator of `cfg` into run directory `out`; returns it in eval mode."""
    device = resolve_device(cfg.device)
    train, _ = toy_split(cfg.data, cfg.n_train)
    x_train = torch.as_tensor(train, device=device)
    model = build_base(cfg, x_train.shape[1]).to(device)
    out = prepare_run_dir(out, resume)  # only once every input has been checked
    model.standardize.fit(x_train)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr(cfg))
    data_gen = torch.Generator().manual_seed(cfg.seed)
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)

    first = 1
    if resume:
        state = load_checkpoint(latest_checkpoint(out), {"base": model}, map_location=device)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], data_gen, gen)
        first = state["step"] + 1
    else:
        save_yaml(cfg, out / "config.yaml", "base")
    log = MetricsLog(out, resume_step=first - 1 if resume else None)

    def step_fn(step: int) -> dict:
        idx = torch.randint(len(x_train), (cfg.batch_size,), generator=data_gen).to(device)
        result = model.loss(x_train[idx], gen)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
        check_finite(step, loss=result.metrics["loss"], gradient=grad_norm)
        opt.step()
        sched.step()
        return {**result.metrics, "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}

    def save(step: int) -> None:
        save_checkpoint(out, step, {"base": model}, {
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": rng_state(data_gen, gen), "data_dim": x_train.shape[1]})

    run_steps(first, cfg.steps, step_fn, save, log, cfg.checkpoint_every, quiet, desc=f"base {cfg.model}")
    return model.eval()
