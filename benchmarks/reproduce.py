"""The tilting paper's Table 1 in one command: its MNIST and Fashion-MNIST rows (VAE, VAE + EBM, GLF, GLF + EBM)
at the paper's own scale on a GPU, or the same code at a toy scale on a CPU.

    .venv/bin/python benchmarks/reproduce.py --scale paper --device cuda     # appendix B, one GPU
    .venv/bin/python benchmarks/reproduce.py --scale smoke                   # seconds on a CPU (make test runs it)

For each data set and base (`vae`, `glf`), as resumable timed stages (benchmarks/common.py run_stage):

    DATA:classifier      the domain classifier of the data set (cached)
    DATA:BASE            the base, appendix B.1: DCGAN VAE (latent 100, Bernoulli decoder) or GLF (the same
                         autoencoder with latent 64 and a 4-coupling flow of 256 units, trained jointly); 256
                         epochs at batch 128, Adam at a fixed 1e-3
    DATA:BASE+ebm        the latent EBM on the frozen base, appendix B.2 and §5.4: the 3 + 3 residual-block
                         energy (64 and 128 channels), short-run Langevin ε = 0.01 × 60 steps from N(0, I),
                         energy regularization 0.1, 1,000 steps on a VAE and 200 on a GLF
    DATA:BASE:sample     n samples of the base and n of the tilted model (Langevin ε = 0.01 × 100 steps)
    DATA:BASE:fid        domain FID (the project's classifier) and Inception FID of both against the test set

Writes benchmarks/results/reproduce_SCALE.json and the `reproduce-SCALE` section of BENCHMARKS.md: the
FIDs beside the paper's (Inception FID, 10,000 samples against the test set), and every stage's wall time.
`--scale paper` runs in bf16 autocast on the device given; `--scale smoke` shrinks every network, step count
and sample count so that the whole path runs in seconds, on any labelled image set (`--data FILE.npz`).
"""

from __future__ import annotations

import argparse
import datetime
import enum
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import tiltkit
from common import ROOT, cpu_model, git_commit, run_stage, save_results, write_block
from tiltkit.config import BaseRunConfig, TiltRunConfig, from_dict
from tiltkit.data.source import DataSource
from tiltkit.metrics.image_eval import Metric, classifier_for, evaluate_images
from tiltkit.training import train_base, train_tilt


class Scale(str, enum.Enum):
    PAPER = "paper"  # appendix B as written
    SMOKE = "smoke"  # the same stages with toy networks and counts


PAPER_FID = {  # Table 1: Inception FID, 10,000 samples against the test set
    "mnist": {"vae": 18.9, "vae+ebm": 16.0, "glf": 14.2, "glf+ebm": 12.1},
    "fashion-mnist": {"vae": 57.1, "vae+ebm": 38.1, "glf": 32.5, "glf+ebm": 25.3},
}
PAPER_DATA = ("mnist", "fashion-mnist")  # Table 1's image sets
BASES = ("vae", "glf")
EPOCHS, BATCH = 256, 128  # B.1: both bases
EBM_STEPS = {"vae": 1000, "glf": 200}  # §5.4


def base_options(scale: Scale, base: str, data: str, n_train: int, device: str) -> dict:
    """A BaseRunConfig's options for `base` on `data` (n_train training images) at `scale`."""
    steps = EPOCHS * math.ceil(n_train / BATCH)
    width, latent = 64, {"vae": 100, "glf": 64}[base]  # DCGAN's 64 base channels; B.1's latent sizes
    if scale is Scale.SMOKE:
        steps, width, latent = 3, 4, 4
    kwargs = {"latent_dim": latent, "width": width}
    kwargs |= {"likelihood": "bernoulli"} if base == "vae" else {"n_couplings": 4, "hidden": 256 if scale is
                                                                 Scale.PAPER else 8, "beta": 1.0}
    return {"data": data, "model": {"vae": "conv-vae", "glf": "glf"}[base], "model_kwargs": kwargs,
            "batch_size": BATCH if scale is Scale.PAPER else 8, "lr": 1e-3, "lr_final": 1e-3, "steps": steps,
            "checkpoint_every": max(1, steps // 10), "device": device,
            "precision": "bf16" if scale is Scale.PAPER and device != "cpu" else "32"}


def tilt_options(scale: Scale, base: str, base_dir: Path, device: str) -> dict:
    """A TiltRunConfig's options for the latent EBM on the base run in `base_dir`."""
    paper = scale is Scale.PAPER
    return {"base": str(base_dir), "energy": "conv",
            "energy_kwargs": {"channels": [64, 128], "blocks": 3} if paper else {"channels": [4], "blocks": 1},
            "steps": EBM_STEPS[base] if paper else 2, "batch_size": 64 if paper else 8, "lr": 5e-4,
            "betas": [0.5, 0.999], "alpha": 0.1, "grad_clip": 1.0,
            "train_sampler": {"kind": "langevin", "steps": 60 if paper else 2, "step_size": 0.01},
            "sample_sampler": {"kind": "langevin", "steps": 100 if paper else 2, "step_size": 0.01},
            "persistent": False, "compile": "auto" if paper else "off", "checkpoint_every": 100 if paper else 1,
            "device": device, "precision": "bf16" if paper and device != "cpu" else "32"}


def train_stage(cfg, out: Path, train) -> dict:
    train(cfg, out, resume=(out / "config.yaml").exists(), quiet=True)
    return {"steps": cfg.steps}


def sample_stage(runs: dict[str, Path], out: Path, n: int, device: str) -> dict:
    """n images of each run (the same noise seed), saved to out as one .npz; seconds per run."""
    seconds, xs = {}, {}
    for key, run in runs.items():
        t0 = time.perf_counter()
        xs[key] = tiltkit.load(run, device=device).images(n, generator=torch.Generator(device).manual_seed(1),
                                                          chunk=min(n, 2000))
        seconds[key] = round(time.perf_counter() - t0, 2)
    np.savez_compressed(out, **{k: v.numpy() for k, v in xs.items()})
    return {"seconds_per_run": seconds}


def fid_stage(samples: Path, source: DataSource, metrics: list[Metric], device: str) -> dict:
    loaded = np.load(samples)
    return {key: evaluate_images(torch.from_numpy(loaded[key]), source, metrics, floor=False, device=device)["model"]
            for key in loaded.files}


def fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def section(r: dict) -> str:
    rows = []
    for data, per in r["table"].items():
        for key in ("vae", "vae+ebm", "glf", "glf+ebm"):
            got = per.get(key, {})
            paper = PAPER_FID.get(data, {}).get(key)
            rows.append(f"| {data} | {key} | {fmt(got.get('inception_fid'))} | {fmt(paper)} | "
                        f"{fmt(got.get('fid'), 2)} |")
    times = " · ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in r["stages"].items())
    total = sum(v["seconds"] for v in r["stages"].values())
    return (f"{r['date']}, commit {r['commit']}, {r['device_name']}, torch {r['torch']}; scale `{r['scale']}`, "
            f"{r['n']} samples per model against the test set.\n\n"
            "| data | model | Inception FID | paper (Table 1) | domain FID |\n|---|---|---:|---:|---:|\n"
            + "\n".join(rows) + f"\n\nStage wall times: {times}; total {total / 60:.1f} min.\n\n"
            f"Reproduce: `{r['command']}`.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=Scale, choices=list(Scale), default=Scale.PAPER)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--data", default=",".join(PAPER_DATA), help="comma-separated image sets with labels")
    p.add_argument("--n", type=int, help="samples per model (default 10,000; smoke 16)")
    p.add_argument("--out", type=Path, help="work folder (default runs/reproduce-SCALE)")
    p.add_argument("--results", type=Path, help="results JSON (default benchmarks/results/reproduce_SCALE.json)")
    p.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--fresh", action="store_true", help="forget earlier results")
    args = p.parse_args()
    scale = args.scale
    n = args.n or (10_000 if scale is Scale.PAPER else 16)
    out = args.out or ROOT / "runs" / f"reproduce-{scale.value}"
    out.mkdir(parents=True, exist_ok=True)
    path = args.results or ROOT / "benchmarks" / "results" / f"reproduce_{scale.value}.json"
    results = json.loads(path.read_text()) if path.exists() and not args.fresh else {}
    results.setdefault("stages", {})
    results.setdefault("table", {})
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else cpu_model()
    results.update({"path": str(path), "scale": scale.value, "n": n, "device_name": device_name,
                    "torch": torch.__version__, "command": "python benchmarks/reproduce.py " + " ".join(
                        f"--{k} {v.value if isinstance(v, Scale) else v}" for k, v in
                        (("scale", scale), ("device", args.device), ("data", args.data)))})
    metrics = [Metric.FID, Metric.INCEPTION_FID]
    for data in [d for d in args.data.split(",") if d]:
        slug = Path(data).stem if data.endswith((".npz", ".npy")) else data
        source = DataSource(data)
        n_train = len(source.images("train").x)
        run_stage(f"{slug}:classifier", results, lambda: (classifier_for(source), {})[1])
        for base in BASES:
            base_cfg = from_dict(BaseRunConfig, base_options(scale, base, data, n_train, args.device), base)
            base_dir, tilt_dir = out / slug / base, out / slug / f"{base}-ebm"
            run_stage(f"{slug}:{base}", results, lambda: train_stage(base_cfg, base_dir, train_base))
            tilt_cfg = from_dict(TiltRunConfig, tilt_options(scale, base, base_dir, args.device), f"{base}+ebm")
            run_stage(f"{slug}:{base}+ebm", results, lambda: train_stage(tilt_cfg, tilt_dir, train_tilt))
            samples = out / slug / f"{base}-samples.npz"
            run_stage(f"{slug}:{base}:sample", results,
                      lambda: sample_stage({base: base_dir, f"{base}+ebm": tilt_dir}, samples, n, args.device))
            run_stage(f"{slug}:{base}:fid", results, lambda: fid_stage(samples, source, metrics, args.device))
            for key in (base, f"{base}+ebm"):
                results["table"].setdefault(slug, {})[key] = results["stages"][f"{slug}:{base}:fid"][key]
    results.update({"date": datetime.date.today().isoformat(), "commit": git_commit()})
    save_results(results)
    write_block(f"reproduce-{scale.value}", section(results), f"Table 1 at scale `{scale.value}` "
                f"(`benchmarks/reproduce.py`)", args.markdown)
    print(section(results))


if __name__ == "__main__":
    main()
