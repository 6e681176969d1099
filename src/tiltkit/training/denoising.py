"""Train a Denoising-EBM by its Algorithm 1 (Denoising-EBM paper §4.2; the math is in tiltkit/denoising.py);
the debm Method.

The first `pretrain_steps` iterations are one reconstruction step each (a DAE and decoder that already
denoise before the energies are contrasted; not in the paper). Each later iteration:
1. L reconstruction steps on fresh batches: L_DAE + L_Dec (eqs. 1, 13), per-example σ from the ladder;
2. K Langevin steps on U_s(·, σ_i) from z⁰ ~ N(0, I), x⁰ = h_γ(z_K), T Langevin steps on U_c(·, σ_i);
3. one contrastive update on the last batch: the semantic loss moves γ only, the texture loss φ only
   (lines 14–17), with one Adam for all parameters (lines 5 and 18).
"""

from __future__ import annotations

from pathlib import Path

import torch

from torch import Tensor, nn

from ..config import DebmRunConfig, TextureSampler
from ..data.source import DataSource
from ..denoising import DenoisingEBM
from ..devices import resolve_device
from ..errors import UserError
from ..metrics.ood import Score
from ..precision import MixedPrecision
from ..samplers import AnnealedConfig, SamplerConfig
from .board import image_preview
from .builders import build_debm
from .distributed import Distributed
from .loop import RunState, run_steps
from .method import Method
from .rundir import prepare_run_dir


def train_debm(cfg: DebmRunConfig, out: Path, resume: bool = False, quiet: bool = False,
               dist: Distributed = Distributed()) -> DenoisingEBM:
    """Train the Denoising-EBM of `cfg` into run directory `out` (as rank `dist.rank` of a torchrun job);
    returns it in eval mode."""
    device = resolve_device(cfg.device)
    source = DataSource.of(cfg)
    if not source.is_image:
        raise UserError(f"a Denoising-EBM is for images; --data {cfg.data} is a point set")
    shape = tuple(source.images("train").shape)
    model = build_debm(cfg, shape).to(device)
    x_train = source.tensor("train", cfg.n_train, model.pixel_range).to(device)
    out = prepare_run_dir(out, resume, dist)  # only once every input has been checked
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    data_gen, gen = dist.generators(cfg.seed, device)
    run = RunState(out, cfg, DEBM.kind, DEBM.modules(model), opt, data_gen, gen,
                   MixedPrecision(cfg.precision, device), dist, shape, samplers=("latent_sampler", "pixel_sampler"),
                   preview=image_preview(DEBM, cfg, model))
    first = run.begin(resume)
    amp = run.amp
    phi, gamma = list(model.dae.parameters()), list(model.decoder.parameters())
    reconstruction, contrastive = (dist.wrap(model, m, device) for m in ("reconstruction_loss", "contrastive_losses"))

    def step_fn(step: int) -> dict:
        for _ in range(1 if step <= cfg.pretrain_steps else cfg.recon_steps):  # 1. lines 2–6
            x = dist.draw_batch(x_train, cfg.batch_size, run.data_gen, cfg.hflip)
            with amp.autocast():
                recon = reconstruction(x, gen)
            recon_norm = amp.step(opt, [(recon.loss.float(), phi + gamma)], cfg.grad_clip)
            run.check(step, reconstruction_loss=recon.loss.item(), reconstruction_gradient=recon_norm)
        model.observe_codes(x, gen)  # the semantic chains start where these codes live (denoising.CodePrior)
        if step <= cfg.pretrain_steps:
            return {**recon.metrics, "loss": recon.loss.item(), "grad_norm": recon_norm}
        sigma = model.draw_sigmas(cfg.batch_size, gen)  # 2. lines 7–13
        latent, pixel = run.chains["latent_sampler"], run.chains["pixel_sampler"]
        with amp.sampling(latent.kind, pixel.kind):
            chains = model.sample(cfg.batch_size, latent, pixel, gen, sigma)
        with amp.autocast():  # 3. lines 14–18: the semantic loss moves γ only, the texture loss φ only
            semantic, texture, metrics = contrastive(x, sigma, chains.z, chains.x, gen, cfg.alpha)
        norm = amp.step(opt, [(semantic.float(), gamma), (texture.float(), phi)], cfg.grad_clip)
        run.check(step, cfg.max_energy, semantic_loss=semantic.item(), texture_loss=texture.item(), gradient=norm)
        metrics = {**recon.metrics, **metrics, "loss": recon.loss.item(), "grad_norm": norm}
        if chains.nonfinite_rejections:
            metrics["nonfinite_rejections"] = chains.nonfinite_rejections
        return metrics

    run_steps(run, first, cfg.steps, step_fn, cfg.checkpoint_every, quiet, desc="denoising-ebm")
    return model.eval()


def texture_stage(cfg: DebmRunConfig) -> SamplerConfig | AnnealedConfig:
    """The sampling chains' second stage: annealed Langevin on the score, or the paper's chain on U_c."""
    return cfg.sample_pixel_sampler if TextureSampler(cfg.texture_sampler) is TextureSampler.PAPER \
        else cfg.sample_annealed


class DebmMethod(Method):
    """A Denoising-EBM run: two-stage samples (semantic chains on U_s, then texture chains on U_c) and the
    texture energy as its OOD score."""

    kind = command = "debm"
    config_class = DebmRunConfig
    label = "Denoising-EBM"

    def train(self, cfg: DebmRunConfig, out: Path, resume: bool = False, quiet: bool = False,
              dist: Distributed = Distributed()) -> DenoisingEBM:
        return train_debm(cfg, out, resume, quiet, dist)

    def build(self, run_dir: Path, cfg: DebmRunConfig, data_shape: tuple[int, ...]) -> DenoisingEBM:
        return build_debm(cfg, data_shape)

    def modules(self, model: DenoisingEBM) -> dict[str, nn.Module]:
        return {"model": model}

    def draw(self, cfg: DebmRunConfig, model: DenoisingEBM, noise: Tensor, generator: torch.Generator) -> Tensor:
        return model.sample(len(noise), cfg.sample_latent_sampler, texture_stage(cfg), generator,
                            cfg.sample_sigma, z0=noise).x

    def with_sampling(self, cfg: DebmRunConfig, model: DenoisingEBM, steps: int | None = None,
                      step_size: float | None = None, data_space: bool = False) -> tuple[DebmRunConfig, DenoisingEBM]:
        if steps is not None or step_size is not None or data_space:
            raise UserError("--space, --steps and --step-size set a tilted run's sampler; a debm run samples with its "
                            "config's sample_latent_sampler, then sample_annealed (or sample_pixel_sampler: "
                            "texture_sampler paper)")
        return cfg, model

    def trajectory(self, cfg: DebmRunConfig, model: DenoisingEBM, n: int, every: int,
                   generator: torch.Generator) -> list[Tensor]:
        """h(z_t) through the semantic stage, then x_t through the texture stage (paper Fig. 5)."""
        return model.sample(n, cfg.sample_latent_sampler, texture_stage(cfg), generator, cfg.sample_sigma,
                            return_trajectory=True, every=every).trajectory

    def compare(self, cfg: DebmRunConfig, model: DenoisingEBM, n: int,
                generator: torch.Generator) -> list[tuple[str, Tensor]]:
        """Semantic images x⁰ = h(z_K) and the two-stage samples x_T of the same chains."""
        result = model.sample(n, cfg.sample_latent_sampler, texture_stage(cfg), generator, cfg.sample_sigma)
        return [("semantic image h(z_K)", result.semantic), ("two-stage sample x_T", result.x)]

    def scores(self, model: DenoisingEBM) -> list[Score]:
        return [Score.TEXTURE, Score.MULTISCALE, Score.COMBINED]

    def describe(self, model: DenoisingEBM) -> str:
        return "a Denoising-EBM run"


DEBM = DebmMethod()
