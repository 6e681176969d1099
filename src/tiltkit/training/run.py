"""Run directories: creation, the metrics log, devices, and rebuilding a trained model from a run.

    RUN/config.yaml      the resolved options (kind: base | tilt)
    RUN/metrics.jsonl    one JSON object per logged step
    RUN/checkpoints/     see checkpoint.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..config import BaseRunConfig, TiltRunConfig, load_yaml
from ..energies import ENERGIES
from ..errors import UserError
from ..generators import GENERATORS
from ..tilt import TiltedModel
from .checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
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


def prepare_run_dir(out: Path, resume: bool) -> Path:
    """A new empty run directory, or (resume) an existing one that holds a config."""
    out = Path(out)
    if resume:
        if not (out / "config.yaml").is_file():
            raise UserError(f"--resume: {out} is not a tiltkit run directory (no config.yaml)")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty: choose a new --out, or pass --resume")
    out.mkdir(parents=True, exist_ok=True)
    return out


class MetricsLog:
    """Appends one JSON line per call to RUN/metrics.jsonl; on resume, drops lines past the checkpoint."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


def build(registry: dict, name: str, kwargs: dict, data_dim: int, seed: int, what: str) -> nn.Module:
    """registry[name](data_dim, **kwargs), its initial weights drawn from `seed` alone.

    nn layers initialize from the global RNG; a forked, seeded RNG keeps the run
    reproducible and leaves the caller's RNG state untouched.
    """
    if name not in registry:
        raise UserError(f"unknown {what} {name!r}: expected one of {', '.join(registry)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return registry[name](data_dim, **kwargs)
        except TypeError as exc:
            raise UserError(f"{what} options for {name!r}: {exc}") from None


def build_base(cfg: BaseRunConfig, data_dim: int) -> nn.Module:
    return build(GENERATORS, cfg.model, cfg.model_kwargs, data_dim, cfg.seed, "model")


def build_energy(cfg: TiltRunConfig, data_dim: int) -> nn.Module:
    return build(ENERGIES, cfg.energy, cfg.energy_kwargs, data_dim, cfg.seed, "energy")


def read_run(run_dir: Path):
    """(kind, config) of a run directory, with a clear error for anything that is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a tiltkit run directory (no config.yaml)")
    return load_yaml(run_dir / "config.yaml")


def data_dim_of(checkpoint: Path) -> int:
    """The data dimension recorded in a checkpoint's state."""
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
    return int(state["data_dim"])


def load_run(run_dir: Path, device: torch.device | str = "cpu"):
    """(kind, config, model) of a trained run at its latest checkpoint, in eval mode.

    A base run gives its generator; a tilt run gives the TiltedModel (base weights included).
    """
    kind, cfg = read_run(run_dir)
    ckpt = latest_checkpoint(run_dir)
    try:
        data_dim = data_dim_of(ckpt)
    except (OSError, RuntimeError, KeyError, EOFError):
        raise UserError(f"checkpoint {ckpt} is unreadable or incomplete") from None
    if kind == "base":
        model = build_base(cfg, data_dim)
        load_checkpoint(ckpt, {"base": model}, map_location=device)
    else:
        base_kind, base_cfg = load_yaml(Path(run_dir) / "base_config.yaml")
        model = TiltedModel(build_base(base_cfg, data_dim), build_energy(cfg, data_dim))
        load_checkpoint(ckpt, {"base": model.base, "energy": model.energy}, map_location=device)
    return kind, cfg, model.to(device).eval()


@torch.no_grad()
def sample_run(kind: str, cfg, model: nn.Module, n: int, generator: torch.Generator,
               chunk: int = 5000) -> torch.Tensor:
    """n samples of a loaded run: the base's own, or the tilted model's (cfg.sample_sampler on U)."""
    parts = []
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        noise = model.sample_noise(m, generator)
        if kind == "tilt":
            noise = model.sample(cfg.sample_sampler, noise, generator).noise
        parts.append(model.decode(noise))
    return torch.cat(parts)
