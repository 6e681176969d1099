"""Train a Denoising-EBM by its Algorithm 1 (Denoising-EBM paper §4.2; the math is in tiltkit/denoising.py).

The first `pretrain_steps` iterations are one reconstruction step each (a DAE and decoder that already
denoise before the energies are contrasted; not in the paper). Each later iteration:
1. L reconstruction steps on fresh batches: L_DAE + L_Dec (eqs. 1, 13), per-example σ from the ladder;
2. K Langevin steps on U_s(·, σ_i) from z⁰ ~ N(0, I), x⁰ = h_γ(z_K), T Langevin steps on U_c(·, σ_i);
3. one contrastive update on the last batch: the semantic loss moves γ only, the texture loss φ only
   (lines 14–17), with one Adam for all parameters (lines 5 and 18).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import DebmRunConfig
from ..data.images import random_hflip
from ..data.source import DataSource
from ..denoising import DenoisingEBM
from ..errors import UserError
from .checkpoint import save_checkpoint
from .loop import check_finite, rng_state, run_steps, start_or_resume
from .run import build, prepare_run_dir, resolve_device


def build_debm(cfg: DebmRunConfig, data_shape: tuple[int, ...]) -> DenoisingEBM:
    return build({"debm": DenoisingEBM}, "debm", cfg.model_kwargs, data_shape, cfg.seed, "Denoising-EBM")


def step_split(opt: torch.optim.Optimizer, parts: list[tuple[Tensor, list[nn.Parameter]]],
               grad_clip: float | None) -> float:
    """One optimizer step where each loss of `parts` gives gradients to its own parameters only; returns the
    gradient norm (before clipping)."""
    opt.zero_grad(set_to_none=True)
    params = []
    for loss, group in parts:
        for p, g in zip(group, torch.autograd.grad(loss, group, allow_unused=True)):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        params += group
    norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf")))
    if math.isfinite(norm):  # a non-finite gradient never reaches the weights (the caller stops the run)
        opt.step()
    return norm


def train_debm(cfg: DebmRunConfig, out: Path, resume: bool = False, quiet: bool = False) -> DenoisingEBM:
    """Train the Denoising-EBM of `cfg` into run directory `out`; returns it in eval mode."""
    device = resolve_device(cfg.device)
    source = DataSource.of(cfg)
    if not source.is_image:
        raise UserError(f"a Denoising-EBM is for images; --data {cfg.data} is a point set")
    shape = tuple(source.images("train").shape)
    model = build_debm(cfg, shape).to(device)
    x_train = source.tensor("train", cfg.n_train, model.pixel_range).to(device)
    out = prepare_run_dir(out, resume)  # only once every input has been checked
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    phi, gamma = list(model.dae.parameters()), list(model.decoder.parameters())

    first, _, log = start_or_resume(out, resume, cfg, "debm", {"model": model}, opt, (data_gen, gen), device)

    def batch() -> Tensor:
        idx = torch.randint(len(x_train), (cfg.batch_size,), generator=data_gen).to(device)
        return random_hflip(x_train[idx], data_gen) if cfg.hflip else x_train[idx]

    def step_fn(step: int) -> dict:
        for _ in range(1 if step <= cfg.pretrain_steps else cfg.recon_steps):  # 1. lines 2–6
            x = batch()
            recon = model.reconstruction_loss(x, gen)
            recon_norm = step_split(opt, [(recon.loss, phi + gamma)], cfg.grad_clip)
            check_finite(step, reconstruction_loss=recon.loss.item(), reconstruction_gradient=recon_norm)
        if step <= cfg.pretrain_steps:
            return {**recon.metrics, "loss": recon.loss.item(), "grad_norm": recon_norm}
        sigma = model.draw_sigmas(cfg.batch_size, gen)  # 2. lines 7–13
        chains = model.sample(cfg.batch_size, cfg.latent_sampler, cfg.pixel_sampler, gen, sigma)
        semantic, texture, metrics = model.contrastive_losses(x, sigma, chains.z, chains.x, gen, cfg.alpha)  # 3.
        norm = step_split(opt, [(semantic, gamma), (texture, phi)], cfg.grad_clip)
        check_finite(step, semantic_loss=semantic.item(), texture_loss=texture.item(), gradient=norm)
        metrics = {**recon.metrics, **metrics, "loss": recon.loss.item(), "grad_norm": norm}
        if chains.nonfinite_rejections:
            metrics["nonfinite_rejections"] = chains.nonfinite_rejections
        return metrics

    def save(step: int) -> None:
        save_checkpoint(out, step, {"model": model}, {
            "optimizer": opt.state_dict(), "rng": rng_state(data_gen, gen), "data_shape": list(shape)})

    run_steps(first, cfg.steps, step_fn, save, log, cfg.checkpoint_every, quiet, desc="denoising-ebm")
    return model.eval()
