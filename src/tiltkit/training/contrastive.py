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

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..config import NO_BASE, BaseRunConfig, TiltRunConfig, read_config, save_yaml
from ..data.images import to_model_range
from ..data.source import DataSource
from ..devices import resolve_device
from ..energies.spectral import spectral_penalty
from ..errors import UserError
from ..generators import BaseModel, Capability, FlowInDataSpace, PixelBox
from ..losses import contrastive_loss
from ..metrics.image_eval import DomainFID, classifier_for
from ..metrics.ood import Score, likelihood_scores
from ..nn import fit_standardizers
from ..precision import MixedPrecision
from ..samplers import CompileMode, ReplayBuffer
from ..samplers.noise import Noise
from ..tilt import TiltedModel
from .base import BASE
from .board import image_preview
from .builders import build_base, build_energy, pixel_box_config, tilted_model
from .checkpoint import BEST
from .distributed import Distributed
from .loop import EarlyStopping, RunState, run_steps
from .method import Method
from .rundir import config_path, prepare_run_dir

DATA_INIT_N = 500  # training images for the data-dependent init of weight norm
COMPILE_MIN_GRAD_EVALS = 200_000  # `compile: auto` pays the compile time (~tens of s on CPU) past this
BASE_CONFIG = "base_config.yaml"  # a tilt run's copy of its base run's config: the data it was trained on


def use_compile(cfg: TiltRunConfig) -> bool:
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
    x_train, validator = training_data(cfg, DataSource.of(base_cfg), base_cfg.n_train, base, quiet)
    energy = build_energy(cfg, tuple(x_train.shape[1:]))

    def save_inputs(out: Path) -> None:
        if cfg.base == NO_BASE:
            save_yaml(base_cfg, out / BASE_CONFIG, BASE.kind)
        else:
            shutil.copyfile(Path(cfg.base) / "config.yaml", out / BASE_CONFIG)
    return fit_energy(TILT, cfg, out, base, energy, x_train, validator, resume, quiet, dist, save_inputs)


def fit_energy(method: Method, cfg: TiltRunConfig, out: Path, base: BaseModel, energy: nn.Module, x_train: Tensor,
               validator: DomainFID | None, resume: bool, quiet: bool, dist: Distributed,
               save_inputs: Callable[[Path], None]) -> TiltedModel:
    """The contrastive training every tilt shares: `energy` on the frozen `base` from positives `x_train`
    (N, *data_shape), into run directory `out` as a `method.kind` run. `save_inputs(out)` writes what the
    method keeps beside a new run's config."""
    device = resolve_device(cfg.device)
    base.requires_grad_(False)
    x_train, energy = x_train.to(device), energy.to(device)
    shape = tuple(x_train.shape[1:])
    tilted = tilted_model(cfg, base.to(device), energy)
    out = prepare_run_dir(out, resume, dist)  # only once every input has been checked
    fit_standardizers(energy, x_train)
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

    run = RunState(out, cfg, method.kind, method.modules(tilted), opt, data_gen, gen,
                   MixedPrecision(cfg.precision, device), dist, shape,
                   shared_extra=lambda: {"early_stopping": stopper.state_dict()},
                   local_extra=lambda: {"buffer": buffer.state_dict()} if buffer is not None else {},
                   restore=restore, samplers=("train_sampler",), preview=image_preview(method, cfg, tilted))
    if not resume and dist.main:
        save_inputs(out)
    first = run.begin(resume)
    compiled = use_compile(cfg)
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


def load_base(cfg: TiltRunConfig, device: torch.device) -> tuple[BaseRunConfig, BaseModel]:
    """(base config, frozen base): the trained base run `cfg.base`, or a PixelBox on `cfg.data` (base: none)."""
    if cfg.base == NO_BASE:
        base_cfg = pixel_box_config(cfg)
        source = DataSource.of(base_cfg)
        if not source.is_image:
            raise UserError(f"a pixel EBM (base: none) is for images; --data {cfg.data} is a point set")
        return base_cfg, build_base(base_cfg, source.images("train").shape).to(device)
    base_cfg = read_config(config_path(cfg.base), BaseRunConfig, BASE.kind)
    return base_cfg, BASE.load(Path(cfg.base), base_cfg, device)


@torch.no_grad()
def init_weight_norm(tilted: TiltedModel, x: Tensor, generator: torch.Generator) -> None:
    """Data-dependent init of a weight-normalized energy on training images (VAEBM: 5 batches)."""
    if tilted.joint:
        tilted.energy.data_init(x, tilted.base.encode(x, generator))
    else:
        tilted.energy.data_init(x)


def training_data(cfg: TiltRunConfig, source: DataSource, n_train: int | None, base: BaseModel, quiet: bool):
    """(positives, validator or None): the first `n_train` training examples of `source`, images in the
    base's pixel range.

    With `eval_every` > 0 (images only), `val_size` training images are held out from the
    positives and a DomainFID on them validates the energy.
    """
    if not source.is_image:
        if cfg.eval_every:
            raise UserError("eval_every: validation by domain FID is for image data")
        return source.points("train", n_train), None
    if base.pixel_range is None:
        raise UserError(f"--data {source.name} holds images, but the base makes points")
    if not cfg.eval_every:
        return to_model_range(source.images("train").x[:n_train], base.pixel_range), None
    train, val = source.train_val(cfg.val_size, cfg.seed)
    validator = DomainFID(val, classifier_for(source, quiet), base.pixel_range, cfg.eval_n, cfg.seed)
    return to_model_range(train.x[:n_train], base.pixel_range), validator


class TiltMethod(Method):
    """A tilt run: an energy on a frozen base run (or on the flat pixel box: a pixel EBM), sampled by
    cfg.sample_sampler on U(ε) = ½‖ε‖² + E(T(ε))."""

    kind = command = "tilt"
    config_class = TiltRunConfig
    label = "tilted"

    def check_command_line(self, cfg: TiltRunConfig, given_data: bool) -> None:
        if not cfg.base:
            raise UserError("train tilt: --base DIR is required (or --base-module MODULE:FACTORY for your own generator)")

    def train(self, cfg: TiltRunConfig, out: Path, resume: bool = False, quiet: bool = False,
              dist: Distributed = Distributed()) -> TiltedModel:
        return train_tilt(cfg, out, resume, quiet, dist)

    def build(self, run_dir: Path, cfg: TiltRunConfig, data_shape: tuple[int, ...]) -> TiltedModel:
        base_cfg = self.data_config(run_dir, cfg)
        return tilted_model(cfg, build_base(base_cfg, data_shape), build_energy(cfg, data_shape))

    def modules(self, model: TiltedModel) -> dict[str, nn.Module]:
        return {"base": model.base, "energy": model.energy}

    def data_config(self, run_dir: Path, cfg: TiltRunConfig) -> BaseRunConfig:
        return read_config(Path(run_dir) / BASE_CONFIG, BaseRunConfig, BASE.kind)

    def base(self, model: TiltedModel) -> BaseModel:
        return model.base

    def draw(self, cfg: TiltRunConfig, model: TiltedModel, noise: Noise, generator: torch.Generator) -> Tensor:
        return model.output(model.sample(cfg.sample_sampler, noise, generator).noise)

    def with_sampling(self, cfg: TiltRunConfig, model: TiltedModel, steps: int | None = None,
                      step_size: float | None = None, data_space: bool = False) -> tuple[TiltRunConfig, TiltedModel]:
        """--steps / --step-size on the recipe's sample sampler; data space: chains in x on a flow base."""
        overrides = {k: v for k, v in (("steps", steps), ("step_size", step_size)) if v is not None}
        if overrides:
            cfg = dataclasses.replace(cfg, sample_sampler=dataclasses.replace(cfg.sample_sampler, **overrides))
        if data_space:
            model = TiltedModel(FlowInDataSpace(model.base), model.energy)
        return cfg, model

    def trajectory(self, cfg: TiltRunConfig, model: TiltedModel, n: int, every: int,
                   generator: torch.Generator) -> list[Tensor]:
        """The decoded state of each chain every `every` Langevin steps, start first (paper Fig. 5.3)."""
        result = model.sample(cfg.sample_sampler, n, generator, return_trajectory=True, trajectory_every=every)
        with torch.no_grad():
            return [model.output(state) for state in result.trajectory]

    def compare(self, cfg: TiltRunConfig, model: TiltedModel, n: int,
                generator: torch.Generator) -> list[tuple[str, Tensor]]:
        """Base and tilted samples from the same starting noise (VAEBM with use_mu: the base's decoder means)."""
        noise = model.sample_noise(n, generator)
        with torch.no_grad():
            base = model.base.decode_mean(noise) if model.use_mu else model.base.decode(noise)
        return [("base model", base), ("tilted", self.draw(cfg, model, noise, generator))]

    def scores(self, model: TiltedModel) -> list[Score]:
        likelihood = Capability.LIKELIHOOD in model.base.capabilities
        return (likelihood_scores(model.base) + [Score.ENERGY] + ([Score.TILTED] if likelihood else [])
                + [Score.COMBINED] * (model.base.pixel_range is not None))

    def describe(self, model: TiltedModel) -> str:
        if isinstance(model.base, PixelBox):
            return "a pixel EBM (flat PixelBox base)"
        return f"a tilted run (energy on a {type(model.base).__name__})"


TILT = TiltMethod()
