"""Run directories: creation, the metrics log, devices, and rebuilding a trained model from a run.

    RUN/config.yaml      the resolved options (kind: base | tilt | debm)
    RUN/metrics.jsonl    one JSON object per logged step
    RUN/checkpoints/     see checkpoint.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import BaseRunConfig, TiltRunConfig, load_yaml
from ..energies import ENERGIES
from ..errors import UserError
from ..generators import GENERATORS, Likelihood
from ..tilt import TiltedModel
from ..samplers import noise as nz
from .checkpoint import BEST, atomic_write_text, latest_checkpoint, load_checkpoint, read_state
from .distributed import Distributed


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu. Under torchrun (LOCAL_RANK set), 'auto' and 'cuda' are the
    process's own GPU, cuda:LOCAL_RANK."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    if name == "auto":
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def prepare_run_dir(out: Path, resume: bool, dist: Distributed = Distributed()) -> Path:
    """A new empty run directory, or (resume) an existing one that holds a config; rank 0 checks and
    creates it while the other ranks wait."""
    out = Path(out)
    if dist.main:
        if resume and not (out / "config.yaml").is_file():
            raise UserError(f"--resume: {out} is not a tiltkit run directory (no config.yaml)")
        if not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out} already exists and is not empty: choose a new --out, or pass --resume")
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    return out


class MetricsLog:
    """Appends one JSON line per call to RUN/metrics.jsonl (rank 0 only: `enabled`).

    `trim(step)` drops the step lines past `step` (they will be run again: resume, rollback), and a line
    cut short by a kill; event lines ("event" key) are history and stay.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path, self.enabled = Path(run_dir) / "metrics.jsonl", enabled

    def trim(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and ("event" in record or record.get("step", 0) <= step):
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


def build(registry: dict, name: str, kwargs: dict, data_shape: tuple[int, ...], seed: int, what: str) -> nn.Module:
    """registry[name](shape, **kwargs), its initial weights drawn from `seed` alone.

    Vector models get their dimension D, image models their (C, H, W). nn layers initialize
    from the global RNG; a forked, seeded RNG keeps the run reproducible and leaves the
    caller's RNG state untouched.
    """
    if name not in registry:
        raise UserError(f"unknown {what} {name!r}: expected one of {', '.join(registry)}")
    images = len(data_shape) > 1
    if getattr(registry[name], "image_model", False) != images:
        fits = [k for k, cls in registry.items() if getattr(cls, "image_model", False) == images]
        raise UserError(f"{what} {name!r} takes {'points (N, D)' if images else 'images (N, C, H, W)'}, but the data "
                        f"are {f'images of shape {tuple(data_shape)}' if images else 'points'}: use {' or '.join(fits)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return registry[name](data_shape[0] if len(data_shape) == 1 else tuple(data_shape), **kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{what} {name!r} on data of shape {tuple(data_shape)}: {exc}") from None


def build_base(cfg: BaseRunConfig, data_shape: tuple[int, ...]) -> nn.Module:
    return build(GENERATORS, cfg.model, cfg.model_kwargs, data_shape, cfg.seed, "model")


def build_energy(cfg: TiltRunConfig, data_shape: tuple[int, ...]) -> nn.Module:
    return build(ENERGIES, cfg.energy, cfg.energy_kwargs, data_shape, cfg.seed, "energy")


def pixel_box_config(cfg: TiltRunConfig) -> BaseRunConfig:
    """The base config a pixel EBM (base: none) stands on: a flat PixelBox on the tilt's own data."""
    return BaseRunConfig(data=cfg.data, data_dir=cfg.data_dir, image_size=cfg.image_size, model="pixel-box",
                         model_kwargs={"pixel_range": cfg.pixel_range}, steps=1, seed=cfg.seed, device=cfg.device)


def tilted_model(cfg: TiltRunConfig, base: nn.Module, energy: nn.Module) -> TiltedModel:
    """The TiltedModel a tilt config describes: VAEBM's pixel noise and use_mu set, a joint energy checked."""
    if cfg.pixel_noise:
        if not hasattr(base, "pixel_noise") or getattr(base, "likelihood", None) is Likelihood.BERNOULLI:
            raise UserError("pixel_noise: chains over (ε_z, ε_x) need a VAE with a Gaussian decoder "
                            "(model_kwargs.likelihood: gaussian)")
        base.pixel_noise = True
    if cfg.use_mu and not hasattr(base, "decode_mean"):
        raise UserError(f"use_mu: the base {type(base).__name__} has no decoder mean")
    if getattr(energy, "joint", False):
        if not hasattr(base, "encode"):
            raise UserError(f"a joint energy E(x, z) needs a VAE base with an encoder, not {type(base).__name__}")
        if energy.latent_dim != base.latent_dim:
            raise UserError(f"energy_kwargs.latent_dim is {energy.latent_dim}, the base's latent has "
                            f"{base.latent_dim} dimensions")
    return TiltedModel(base, energy, use_mu=cfg.use_mu)


def read_run(run_dir: Path):
    """(kind, config) of a run directory, with a clear error for anything that is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a tiltkit run directory (no config.yaml)")
    return load_yaml(run_dir / "config.yaml")


def data_shape_of(checkpoint: Path) -> tuple[int, ...]:
    """The shape of one example, recorded in a checkpoint's state."""
    return tuple(int(d) for d in read_state(checkpoint)["data_shape"])


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run is used from: the best by validation if kept, else the latest."""
    best = Path(run_dir) / "checkpoints" / BEST
    return best if (best / "state.pt").is_file() else latest_checkpoint(run_dir)


def load_run(run_dir: Path, device: torch.device | str = "cpu"):
    """(kind, config, model) of a trained run at its best or latest checkpoint, in eval mode.

    A base run gives its generator; a tilt run gives the TiltedModel (base weights included); a debm run
    its DenoisingEBM.
    """
    kind, cfg = read_run(run_dir)
    ckpt = run_checkpoint(run_dir)
    try:
        data_shape = data_shape_of(ckpt)
    except (OSError, RuntimeError, KeyError, EOFError):
        raise UserError(f"checkpoint {ckpt} is unreadable or incomplete") from None
    if kind == "base":
        model = build_base(cfg, data_shape)
        load_checkpoint(ckpt, {"base": model}, map_location=device)
    elif kind == "debm":
        from .denoising import build_debm
        model = build_debm(cfg, data_shape)
        load_checkpoint(ckpt, {"model": model}, map_location=device)
    else:
        base_kind, base_cfg = load_yaml(Path(run_dir) / "base_config.yaml")
        model = tilted_model(cfg, build_base(base_cfg, data_shape), build_energy(cfg, data_shape))
        load_checkpoint(ckpt, {"base": model.base, "energy": model.energy}, map_location=device)
    return kind, cfg, model.to(device).eval()


def base_config(run_dir: Path, kind: str, cfg):
    """The config that names a run's data: itself for a base or debm run, the base run's for a tilt run."""
    return load_yaml(Path(run_dir) / "base_config.yaml")[1] if kind == "tilt" else cfg


@torch.no_grad()
def sample_run(kind: str, cfg, model: nn.Module, n: int, generator: torch.Generator,
               chunk: int = 5000, noise=None, quiet: bool = True) -> torch.Tensor:
    """n samples of a loaded run: the base's own, the tilted model's (cfg.sample_sampler on U), or a
    Denoising-EBM's two-stage samples (cfg.sample_latent_sampler, then cfg.sample_pixel_sampler).

    `noise`: the starting ε (n rows; z⁰ of a debm run), e.g. to compare base and tilted samples from the same draw.
    """
    parts = []
    for lo in tqdm(range(0, n, chunk), desc="sample", disable=quiet or n <= chunk, leave=False):
        m = min(chunk, n - lo)
        eps = model.sample_noise(m, generator) if noise is None else nz.index(noise, slice(lo, lo + m))
        if kind == "tilt":
            eps = model.sample(cfg.sample_sampler, eps, generator).noise
            parts.append(model.output(eps))
        elif kind == "debm":
            parts.append(model.sample(m, cfg.sample_latent_sampler, cfg.sample_pixel_sampler, generator,
                                      cfg.sample_sigma, z0=eps).x)
        else:
            parts.append(model.decode(eps))
    return torch.cat(parts)
