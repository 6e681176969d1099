"""`tiltkit demo`: a base (the MLP VAE; RealNVP or a GLF with `--base realnvp|glf-mlp`) → latent EBM on 25-Gaussians and
Swiss roll, metrics and one figure.

The two data sets train in parallel worker processes (one thread each: these MLPs are too
small for intra-op threading to pay). Writes

    DIR/<dataset>/<base>, DIR/<dataset>/tilt   the two runs
    DIR/metrics.json                           {dataset: {"<base>": {...}, "tilted": {...}}}
    DIR/demo.png                               data | base samples | tilted samples | energy
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .config import BaseRunConfig, TiltRunConfig
from .data.toy import toy_split
from .errors import UserError
from .metrics import toy_metrics
from .api import load
from .training import train_base, train_tilt
from .training.checkpoint import atomic_write_text, list_checkpoints
from .viz import demo_figure

DATASETS = ("25gaussians", "swissroll")
BASES = ("vae", "realnvp", "glf-mlp")
N_SAMPLES = 2000


def recipe(dataset: str, quick: bool, model: str = "vae") -> tuple[BaseRunConfig, TiltRunConfig]:
    """The toy recipe (config.py defaults; RealNVP and GLF with their own) at the demo's budget; `quick` cuts
    it to a smoke test."""
    base, tilt = BaseRunConfig(data=dataset, steps=2500), TiltRunConfig(steps=400)
    if model != "vae":
        base.model, base.model_kwargs = model, {}
    if quick:
        base.steps, tilt.steps = 60, 5
        tilt.train_sampler.steps, tilt.sample_sampler.steps = 5, 10
    return base, tilt


def fit_or_continue(train, cfg, run: Path) -> None:
    """Train `run` from scratch, or continue an interrupted earlier call from its last checkpoint."""
    done = list_checkpoints(run)
    if not done:
        shutil.rmtree(run, ignore_errors=True)
        train(cfg, run, quiet=True)
    elif int(done[-1].name.removeprefix("step_")) < cfg.steps:
        train(cfg, run, resume=True, quiet=True)


def train_and_evaluate(base_cfg: BaseRunConfig, tilt_cfg: TiltRunConfig, out: Path, quiet: bool = True,
                       n_samples: int = N_SAMPLES) -> dict:
    """The base then a latent EBM on base_cfg.data into out/<model> and out/tilt; metrics of n_samples of both
    against as many held-out points. Returns {"data", "metrics", "samples", "seconds"}.
    Uses one thread: run it in a worker process."""
    torch.set_num_threads(1)
    dataset, seconds = base_cfg.data, {}
    t0 = time.perf_counter()
    fit_or_continue(train_base, base_cfg, out / base_cfg.model)
    seconds["base"] = time.perf_counter() - t0
    tilt_cfg.base = str(out / base_cfg.model)
    fit_or_continue(train_tilt, tilt_cfg, out / "tilt")
    seconds["tilt"] = time.perf_counter() - t0 - seconds["base"]
    _, held_out = toy_split(dataset)
    held_out = held_out[:n_samples]
    result = {"data": held_out, "metrics": {}, "samples": {}, "seconds": seconds}
    for label, run in ((base_cfg.model, base_cfg.model), ("tilted", "tilt")):
        x = load(out / run, device="cpu").sample(n_samples, base_cfg.seed).numpy()
        result["samples"][label] = x
        result["metrics"][label] = toy_metrics(x, held_out, dataset)
    seconds["total"] = time.perf_counter() - t0
    if not quiet:
        print(f"{dataset} (seed {base_cfg.seed}) done in {seconds['total']:.0f}s", flush=True)
    return result


def run_demo(out: Path, quick: bool = False, quiet: bool = False, base: str = "vae") -> dict:
    if base not in BASES:
        raise UserError(f"demo base {base!r}: expected one of {', '.join(BASES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty: choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    workers = min(len(DATASETS), max(1, torch.get_num_threads()))
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        n = 500 if quick else N_SAMPLES
        futures = {d: pool.submit(train_and_evaluate, *recipe(d, quick, base), out / d, quiet, n) for d in DATASETS}
        results = {d: f.result() for d, f in futures.items()}
    metrics = {d: r["metrics"] for d, r in results.items()}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    rows = [{"name": d, "data": r["data"], "base": r["samples"][base], "base_name": base, "tilted": r["samples"]["tilted"],
             "energy": load(out / d / "tilt", device="cpu").model.energy} for d, r in results.items()]
    demo_figure(rows, out / "demo.png")
    return metrics
