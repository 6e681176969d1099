"""Fit the energy of a TiltedModel by contrastive divergence, the base frozen (tilting paper §3.2, eq. 5/7;
VAEBM stage 2, Xiao et al. 2021 eq. 8).

    loss = mean E(x⁺) − mean E(x⁻) + α·mean(E(x⁺)² + E(x⁻)²),     x⁻ = T_θ(ε_K) detached,

ε_K from K sampler steps on U(ε) = ½‖ε‖² + E(T_θ(ε)), started from fresh noise (short-run, the
default) or from a replay buffer kept in noise space (`persistent`). The same loop trains
- the latent EBM (ε = ε_z), VAEBM (ε = (ε_z, ε_x), `pixel_noise`; x⁻ = μ(ε_z) with `use_mu`),
- a joint energy E(x, z): positives (x⁺, z⁺ ~ q(z | x⁺)), negatives (x⁻, ε_z),
- the pixel EBM (base "none": ε = x in the pixel box, flat prior, clamped chains).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import NO_BASE, BaseRunConfig, TiltRunConfig, save_yaml
from ..data.images import to_model_range
from ..data.source import DataSource
from ..energies.spectral import spectral_penalty
from ..errors import UserError
from ..outputs import LossOutput
from ..samplers import CompileMode, ReplayBuffer
from ..tilt import TiltedModel
from ..metrics.image_eval import DomainFID, classifier_for
from ..precision import MixedPrecision
from .checkpoint import BEST
from .distributed import Distributed
from .loop import EarlyStopping, RunState, run_steps
from .run import (build_base, build_energy, load_run, pixel_box_config, prepare_run_dir, resolve_device,
                  tilted_model)

DATA_INIT_N = 500  # training images for the data-dependent init of weight norm
COMPILE_MIN_GRAD_EVALS = 200_000  # `compile: auto` pays the compile time (~tens of s on CPU) past this


def contrastive_loss(e_pos: Tensor, e_neg: Tensor, alpha: float, x_neg: Tensor) -> LossOutput:
    """CD loss from E(x⁺), E(x⁻) (B,) with energy L2 regularization; metrics E(x⁺), E(x⁻) and their gap."""
    loss = e_pos.mean() - e_neg.mean() + alpha * (e_pos.pow(2) + e_neg.pow(2)).mean()
    ep, en = e_pos.mean().item(), e_neg.mean().item()
    return LossOutput(loss, {"loss": loss.item(), "e_pos": ep, "e_neg": en, "gap": en - ep}, x_neg)


def use_compile(cfg: TiltRunConfig, device: torch.device) -> bool:
    if cfg.compile == "off":
        return False
    if cfg.compile == "on":
        return True
    return cfg.steps * cfg.train_sampler.gradient_evaluations() >= COMPILE_MIN_GRAD_EVALS


def train_tilt(cfg: TiltRunConfig, out: Path, resume: bool = False, quiet: bool = False,
               dist: Distributed = Distributed()) -> TiltedModel:
    """Train the energy of `cfg` on the frozen base run `cfg.base` (or a PixelBox, base "none") into `out`,
    as rank `dist.rank` of a torchrun job; returns the TiltedModel."""
    device = resolve_device(cfg.device)
    if cfg.eval_every and dist.enabled:
        raise UserError("eval_every: validation by domain FID runs in single-process training only")
    base_cfg, base = load_base(cfg, device)
    base.requires_grad_(False)
    x_train, validator = training_data(cfg, base_cfg, base, quiet)
    x_train = x_train.to(device)
    shape = tuple(x_train.shape[1:])
    energy = build_energy(cfg, shape).to(device)
    tilted = tilted_model(cfg, base, energy)
    out = prepare_run_dir(out, resume, dist)  # only once every input has been checked
    if hasattr(energy, "standardize"):
        energy.standardize.fit(x_train)
    opt = torch.optim.Adam(energy.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    data_gen, gen = dist.generators(cfg.seed, device)
    if not resume and cfg.energy_kwargs.get("weight_norm"):
        init_weight_norm(tilted, x_train[:DATA_INIT_N], gen)
    buffer = ReplayBuffer(cfg.buffer_size, base.sample_noise, cfg.reinit_prob, gen) if cfg.persistent else None
    stopper = EarlyStopping(cfg.patience)

    def restore(shared: dict, local: dict) -> None:
        if buffer is not None:
            buffer.load_state_dict(local["buffer"])
        stopper.load_state_dict(shared["early_stopping"])

    run = RunState(out, cfg, "tilt", {"base": base, "energy": energy}, opt, data_gen, gen, MixedPrecision(cfg.precision, device), dist, shape,
                   shared_extra=lambda: {"early_stopping": stopper.state_dict()},
                   local_extra=lambda: {"buffer": buffer.state_dict()} if buffer is not None else {},
                   restore=restore, samplers=("train_sampler",))
    if not resume and dist.main:
        if cfg.base == NO_BASE:
            save_yaml(base_cfg, out / "base_config.yaml", "base")
        else:
            shutil.copyfile(Path(cfg.base) / "config.yaml", out / "base_config.yaml")
    first = run.begin(resume)
    compiled = use_compile(cfg, device)
    energies = dist.wrap(tilted, "pair_energy", device)
    params = list(energy.parameters())

    def step_fn(step: int) -> dict:
        x_pos = dist.draw_batch(x_train, cfg.batch_size, run.data_gen)
        if buffer is not None and cfg.replay_max is not None:  # VAEBM: replay probability annealed up
            buffer.reinit_prob = 1 - cfg.replay_max * min(1.0, step / cfg.replay_anneal_steps)
        start, idx = buffer.sample(cfg.batch_size, gen) if buffer else (base.sample_noise(cfg.batch_size, gen), None)
        sampler = run.chains["train_sampler"]
        with run.amp.sampling(sampler.kind):
            chain = tilted.sample(sampler, start, gen, compiled, CompileMode(cfg.compile_mode))
        if buffer is not None:
            buffer.update(chain.noise, idx)
        with torch.no_grad():
            x_neg = tilted.output(chain.noise)
            z_pos = base.encode(x_pos, gen) if tilted.joint else None
        with run.amp.autocast():
            e_pos, e_neg = energies(x_pos, x_neg, z_pos, base.latent(chain.noise) if tilted.joint else None)
        result = contrastive_loss(e_pos.float(), e_neg.float(), cfg.alpha, x_neg)
        loss = result.loss
        if cfg.spectral_reg:
            penalty = spectral_penalty(energy)
            loss = loss + cfg.spectral_reg * penalty
            result.metrics["spectral"] = penalty.item()
        grad_norm = run.amp.step(opt, [(loss, params)], cfg.grad_clip)
        m = result.metrics
        run.check(step, cfg.max_energy, loss=m["loss"], e_pos=m["e_pos"], e_neg=m["e_neg"],
                  chain_energy=float(chain.energy.float().mean()), gradient=grad_norm)
        metrics = {**result.metrics, "grad_norm": grad_norm}
        if chain.acceptance_rate is not None:
            metrics["accept"] = chain.acceptance_rate
        if chain.nonfinite_rejections:
            metrics["nonfinite_rejections"] = chain.nonfinite_rejections
        if buffer is not None:
            metrics["replay"] = 1 - buffer.reinit_prob
        if validator is not None and step % cfg.eval_every == 0:
            metrics["val_fid"] = validator(tilted, cfg.sample_sampler)  # the base stays in eval mode throughout
            if stopper.update(step, metrics["val_fid"]):
                run.save(step, name=BEST)
        return metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.compile's recompilation chatter
        run_steps(run, first, cfg.steps, step_fn, cfg.checkpoint_every, quiet, desc="tilt energy",
                  should_stop=stopper.should_stop)
    return tilted.eval()


def load_base(cfg: TiltRunConfig, device: torch.device) -> tuple[BaseRunConfig, nn.Module]:
    """(base config, frozen base): the trained base run `cfg.base`, or a PixelBox on `cfg.data` (base: none)."""
    if cfg.base == NO_BASE:
        base_cfg = pixel_box_config(cfg)
        source = DataSource.of(base_cfg)
        if not source.is_image:
            raise UserError(f"a pixel EBM (base: none) is for images; --data {cfg.data} is a point set")
        return base_cfg, build_base(base_cfg, source.images("train").shape).to(device)
    base_kind, base_cfg, base = load_run(cfg.base, device)
    if base_kind != "base":
        raise UserError(f"--base {cfg.base} is a {base_kind} run: expected a base run (tiltkit train base)")
    return base_cfg, base


@torch.no_grad()
def init_weight_norm(tilted: TiltedModel, x: Tensor, generator: torch.Generator) -> None:
    """Data-dependent init of a weight-normalized energy on training images (VAEBM: 5 batches)."""
    if tilted.joint:
        tilted.energy.data_init(x, tilted.base.encode(x, generator))
    else:
        tilted.energy.data_init(x)


def training_data(cfg: TiltRunConfig, base_cfg, base: nn.Module, quiet: bool):
    """(positives, validator or None): the base run's training data in the base's pixel range.

    With `eval_every` > 0 (images only), `val_size` training images are held out from the
    positives and a DomainFID on them validates the energy.
    """
    source = DataSource.of(base_cfg)
    if not source.is_image:
        if cfg.eval_every:
            raise UserError("eval_every: validation by domain FID is for image data")
        return source.points("train", base_cfg.n_train), None
    if not cfg.eval_every:
        return to_model_range(source.images("train").x[:base_cfg.n_train], base.pixel_range), None
    train, val = source.train_val(cfg.val_size, cfg.seed)
    validator = DomainFID(val, classifier_for(source, quiet), base.pixel_range, cfg.eval_n, cfg.seed)
    return to_model_range(train.x[:base_cfg.n_train], base.pixel_range), validator
