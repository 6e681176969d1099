"""The Python API: tilt your own generator, load any run, sample and score from Python.

    base = tiltkit.as_base(generator, noise_shape=(d,))       # any nn.Module: noise (B, d) -> x (B, *data_shape)
    run = tiltkit.fit_tilt(base, data, out="runs/mine", steps=500, seed=0)
    x = run.sample(2000, seed=0)                              # (2000, *data_shape); same seed, same samples
    run = tiltkit.load("runs/mine", base=generator)           # in another process, later

`fit_tilt` trains on the same machinery as `tiltkit train` (run directory, config.yaml, metrics.jsonl,
checksummed checkpoints, resume, the divergence policy, precision, and DDP under torchrun). `load`
returns a `Run` for every kind of run, the command line's own included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import ModuleTiltRunConfig, from_dict, to_dict
from .data.images import PixelRange, to_uint8
from .data.source import DataSource
from .devices import device_of, resolve_device
from .errors import UserError
from .generators import BaseModel, ModuleBase
from .methods import read_run
from .metrics import toy_metrics
from .metrics.image_eval import check_shape, evaluate_images, parse_metrics
from .metrics.ood import (BATCH, FITTED, IW_SAMPLES, OODReport, Score, Scorer, compute_scores, fit_on_training, parse_scores,
                          run_ood)
from .samplers import noise as nz
from .samplers.noise import Noise
from .training.distributed import launch
from .training.method import Method
from .training.module_tilt import MODULE_TILT, as_base
from .training.rundir import trained_steps

MIN_EVAL_N = 10  # samples of a point run: fewer give an MMD² of pure noise (images: each metric says its own)
DEFAULT_METRICS = "fid,kid,prdc,classes"  # image runs: the domain-feature metrics

# fit_tilt's defaults for images (C, H, W): the Fashion-MNIST latent-EBM recipe's energy and chains (vectors
# take TiltRunConfig's own: the toy recipe's MLP energy and MALA chains)
IMAGE_DEFAULTS = {"energy": "conv-small", "energy_kwargs": {"width": 32}, "steps": 1000, "batch_size": 64,
                  "lr": 5e-4, "betas": [0.5, 0.999], "alpha": 0.1, "grad_clip": 1.0, "compile": "off",
                  "train_sampler": {"kind": "langevin", "steps": 60, "step_size": 0.01},
                  "sample_sampler": {"kind": "langevin", "steps": 100, "step_size": 0.01}}


@dataclass
class Run:
    """A trained run: its directory, its Method, its config and its model (eval mode)."""

    dir: Path
    method: Method
    cfg: object
    model: nn.Module

    @property
    def base(self) -> BaseModel:
        return self.method.base(self.model)

    @property
    def device(self) -> torch.device:
        return device_of(self.model)

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(seed)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, *, generator: torch.Generator | None = None, noise: Noise | None = None,
               chunk: int = 5000, quiet: bool = True) -> Tensor:
        """n samples (n, *data_shape) of the run's model: the base's own, the tilted model's (its sample sampler),
        a Denoising-EBM's two-stage ones. Random draws come from `generator`, else a new one seeded `seed`;
        `noise`: the starting noise of the n chains (e.g. to compare base and tilted samples from one draw)."""
        gen = generator if generator is not None else self.generator(seed)
        parts = []
        for lo in tqdm(range(0, n, chunk), desc="sample", disable=quiet or n <= chunk, leave=False):
            m = min(chunk, n - lo)
            eps = self.model.sample_noise(m, gen) if noise is None else nz.index(noise, slice(lo, lo + m))
            parts.append(self.method.draw(self.cfg, self.model, eps, gen))
        return torch.cat(parts)

    def images(self, n: int, seed: int = 0, *, generator: torch.Generator | None = None, noise: Noise | None = None,
               chunk: int = 1000, quiet: bool = True) -> Tensor:
        """n samples as uint8 images (n, C, H, W) on the CPU."""
        pixel_range = self._pixel_range()
        return to_uint8(self.sample(n, seed, generator=generator, noise=noise, chunk=chunk, quiet=quiet),
                        pixel_range).cpu()

    def _pixel_range(self) -> PixelRange:
        if self.base.pixel_range is None:
            raise UserError(f"{self.dir}: this run's model makes points, not images")
        return self.base.pixel_range

    @property
    def scorer(self) -> Scorer:
        return self.method.scorer(self.model)

    def score(self, x: Tensor | np.ndarray, scores: str | list | None = None, seed: int = 0, batch: int = BATCH,
              iw_samples: int = IW_SAMPLES) -> dict[str, np.ndarray]:
        """OOD scores of x (N, *data_shape): floats in the model's range, or uint8 images; higher = more
        in-distribution. `scores`: names ("elbo,energy" or a list), or None for every score the run offers.
        Fitted scores (multiscale, combined) are fitted first on the run's own training images."""
        scorer, chosen = self.scorer, self._scores(scores)
        x = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
        if tuple(x.shape[1:]) != tuple(scorer.base.data_shape):
            raise UserError(f"score: x has shape {tuple(x.shape)}; the run's samples have shape "
                            f"{tuple(scorer.base.data_shape)}")
        densities = fit_on_training(scorer, self.data_source(), chosen, seed, batch, iw_samples) \
            if any(s in FITTED for s in chosen) else {}
        values = compute_scores(scorer, x, chosen, self.generator(seed), batch, iw_samples, densities=densities)
        return {s.value: v for s, v in values.items()}

    def _scores(self, scores: str | list | None) -> list[Score]:
        """Score names ("elbo,energy", or a list of names or Scores; None: all) checked against the run."""
        if isinstance(scores, (list, tuple)):
            scores = ",".join(s.value if isinstance(s, Score) else str(s) for s in scores)
        return parse_scores(scores, self.scorer)

    def evaluate(self, data: str | None = None, data_dir: str | None = None, metrics: str | None = None,
                 n: int | None = None, seed: int = 0, quiet: bool = True, exact: bool = False) -> dict:
        """Sample-quality figures of n samples against held-out data (`tiltkit eval`), as a dict.

        Points (default n = 2,000): the toy metrics (MMD², EMD; modes for 25-Gaussians) against the test
        points. Images (default n = 10,000): `metrics` among fid, kid, prdc, classes (domain features, the
        default) and inception-fid, with the floor of real training images (metrics/image_eval.py); `exact`
        runs Inception by its reference runtime (PyTorch, float32) rather than ONNX Runtime.
        """
        source = self.data_source(data, data_dir)
        if not source.is_image and self.base.pixel_range is not None:
            raise UserError(f"--data {source.name} is a point set; {self.dir} is a run on images: evaluate it against "
                            f"an image set")
        if not source.is_image:
            if n is not None and n < MIN_EVAL_N:
                raise UserError(f"--n {n}: the toy metrics need at least {MIN_EVAL_N} samples")
            if metrics is not None:
                raise UserError(f"--metrics {metrics}: image metrics; a run on points ({source.name}) reports the "
                                f"toy metrics (mmd, emd, and modes for 25gaussians)")
            n = n or 2000
            held_out = source.points("test").numpy()
            x = self.sample(n, seed).cpu().numpy()
            if x.ndim != 2 or x.shape[1] != held_out.shape[1]:
                raise UserError(f"--data {source.name} has dimension {held_out.shape[1]}, the run's samples "
                                f"have shape {x.shape[1:]}")
            return {"data": source.name, "n": n, **toy_metrics(x, held_out, source.name)}
        chosen, n = parse_metrics(metrics or DEFAULT_METRICS), n or 10_000
        with torch.no_grad():  # one decoded sample: a shape mismatch is reported before any long work
            check_shape(self.model.decode(self.model.sample_noise(1)), source.images("test"), source.name)
        report = evaluate_images(self.images(n, seed, quiet=quiet), source, chosen, quiet=quiet, exact=exact)
        return {"data": source.name, "source": source.images("test").source, "n": n,
                "metrics": [m.value for m in chosen], **report}

    def ood(self, sets: list[str], scores: str | list | None = None, in_data: str | None = None,
            n: int | None = None, seed: int = 0, data_dir: str | None = None, iw_samples: int = IW_SAMPLES,
            quiet: bool = True) -> tuple[DataSource, OODReport]:
        """(in-distribution source, report) of `tiltkit ood`: n test images of the run's data (or `in_data`) and
        n of each OOD set (metrics/ood.py: uniform, noisy, interp, …, or data names), scored and compared."""
        own = in_data is None or in_data == self.method.data_config(self.dir, self.cfg).data
        source = self.data_source(data_dir=data_dir) if own else DataSource(in_data, data_dir)
        if not source.is_image:
            raise UserError(f"{self.dir} is a run on points ({source.name}): OOD scoring is for image runs" if own
                            else f"--in {source.name}: OOD scoring needs an image set")
        return source, run_ood(self.scorer, source, sets, self._scores(scores), n, seed, data_dir, iw_samples,
                               quiet=quiet)

    def data_source(self, data: str | None = None, data_dir: str | None = None) -> DataSource:
        """The data the run was trained on (or `data`), as a DataSource."""
        cfg = self.method.data_config(self.dir, self.cfg)
        name = data or cfg.data
        if name is None:
            raise UserError(f"{self.dir} was trained on an array given in Python: name the data to compare with "
                            f"(eval --data, ood --in: a data set name or file)")
        return DataSource(name, data_dir or cfg.data_dir, cfg.image_size)

    def with_sampling(self, steps: int | None = None, step_size: float | None = None,
                      data_space: bool = False) -> Run:
        """This run sampled with other sampler steps or step size, or with chains in data space (a tilted flow)."""
        cfg, model = self.method.with_sampling(self.cfg, self.model, steps, step_size, data_space)
        return dataclasses.replace(self, cfg=cfg, model=model)

    def trajectory(self, n: int, every: int, seed: int = 0) -> list[Tensor]:
        """Frames of n chains every `every` steps (a tilted or debm run): uint8 images (n, C, H, W), or points (n, D)."""
        frames = self.method.trajectory(self.cfg, self.model, n, every, self.generator(seed))
        return [self._shown(f) for f in frames]

    def compare(self, n: int, seed: int = 0) -> list[tuple[str, Tensor]]:
        """[(caption, samples)]: base and tilted samples (a debm run: semantic and two-stage) of the same chains,
        uint8 images or points."""
        return [(label, self._shown(x)) for label, x in self.method.compare(self.cfg, self.model, n,
                                                                            self.generator(seed))]

    def _shown(self, x: Tensor) -> Tensor:
        """Samples on the CPU as they are shown: uint8 images, or the points themselves."""
        pixel_range = self.base.pixel_range
        return (to_uint8(x, pixel_range) if pixel_range is not None else x.detach()).cpu()


def load(run_dir: str | Path, base: ModuleBase | nn.Module | None = None, energy: nn.Module | None = None,
         device: str = "auto") -> Run:
    """The run in `run_dir` at its best or latest checkpoint. A tilt of your own generator takes it again as
    `base` (refused if its weights are not those the energy was trained on) unless the run recorded a factory;
    `energy`: your own energy module, where the run was trained with one."""
    method, cfg = read_run(Path(run_dir))
    inputs = {k: v for k, v in (("base", base), ("energy", energy)) if v is not None}
    extra = sorted(set(inputs) - set(method.inputs))
    if extra:
        raise UserError(f"{run_dir} is a {method.kind} run of tiltkit's own models: load it without {extra[0]}=")
    model = method.load(Path(run_dir), cfg, resolve_device(device), **inputs)
    return Run(Path(run_dir), method, cfg, model)


def fit_tilt(base: ModuleBase, data, out: str | Path, steps: int | None = None, seed: int | None = None, *,
             resume: bool = False, quiet: bool = False, **options) -> Run:
    """Train an energy E on your frozen generator, p(x) ∝ p_base(x)·exp(−E(x)), into run directory `out`.

    base: from `as_base`. data: a tensor or array (N, *data_shape) (floats in the base's range, or uint8
    images), or a data name or path as `tiltkit train` takes. options: the names of a `train tilt` recipe
    (energy, energy_kwargs, lr, alpha, train_sampler, sample_sampler, persistent, precision, on_divergence,
    device, …), over defaults picked from the data's shape; `energy` may be your own nn.Module.
    resume: continue the run in `out` from its last checkpoint if it has one (options must match the run's,
    `steps` may extend it). quiet: no progress bar. Under torchrun each process calls fit_tilt and trains its
    share (DDP).
    """
    if not isinstance(base, ModuleBase):
        raise UserError(f"fit_tilt: base must come from tiltkit.as_base(generator, noise_shape=...), "
                        f"got {type(base).__name__}")
    energy = options.pop("energy", None)
    values = {**(IMAGE_DEFAULTS if len(base.data_shape) == 3 else {}), **options}
    if isinstance(energy, str):
        values["energy"], energy = energy, None
    values.update({k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None})
    cfg = from_dict(ModuleTiltRunConfig, values, "fit_tilt")
    resume = resume and (Path(out) / "config.yaml").is_file()
    if resume:
        cfg = resumed_config(Path(out), cfg, {*options, *(["seed"] if seed is not None else [])},
                             steps is not None)
    with launch(cfg.device) as dist:
        model = MODULE_TILT.train(cfg, Path(out), resume, quiet, dist, base=base, data=data, energy=energy)
    return Run(Path(out), MODULE_TILT, cfg, model)


def resumed_config(out: Path, cfg: ModuleTiltRunConfig, given: set[str], steps_given: bool) -> ModuleTiltRunConfig:
    """The saved config of the run in `out`, refusing options given now (`given`) that differ from it; `steps`
    may extend the run."""
    method, saved = read_run(out)
    if method is not MODULE_TILT:
        raise UserError(f"{out} is a {method.kind} run, not a tilt of your own generator")
    now, before = to_dict(cfg), to_dict(saved)
    differ = sorted(k for k in given if now[k] != before[k])
    if differ:
        raise UserError(f"resume: {out} was trained with other options: {', '.join(differ)}")
    if steps_given:
        if cfg.steps < trained_steps(out):
            raise UserError(f"resume: steps {cfg.steps}: {out} has trained {trained_steps(out)} steps already")
        saved.steps = cfg.steps
    return saved


__all__ = ["Run", "as_base", "fit_tilt", "load"]
