"""Glow's couplings on Fashion-MNIST: does a bounded affine scale train without the inverse overflow?

The Glow recipe (configs/fashion_glow_latent_ebm.yaml `base:`, 10,000 steps) with its coupling replaced; for
each coupling (affine, bounded, additive), as resumable timed stages:

    train-COUPLING   the recipe with `coupling: COUPLING` (its time is the run's own training clock)
    check-COUPLING   1,000 prior draws at temperature 1 decoded without the output clamp: the fraction with a
                     non-finite pixel and the fraction with a pixel beyond |x| > 10 (x in [0, 1] for data);
                     bits/dim on the 10,000 test images (one dequantization draw per image)

The affine coupling's 1/σ is unbounded, and after the recipe's CPU steps it decoded much of its prior to
non-finite images; the bounded coupling (tiltkit.generators.flow.Coupling) caps each inverse step at e^B.
Writes benchmarks/results/glow_coupling.json and the `glow-coupling` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/glow_coupling.py --stages train-bounded,check-bounded [--threads 2]
"""

from __future__ import annotations

import dataclasses

import torch

import tiltkit
from tiltkit import viz
from common import ROOT, cpu_model, last_metrics, publish, recipe, run_stage, stage_cli
from tiltkit.data.source import DataSource
from tiltkit.generators.flow import SCALE_BOUND, Coupling
from tiltkit.training import train_base

RECIPE = ROOT / "configs" / "fashion_glow_latent_ebm.yaml"
N_DRAWS, TOO_FAR = 1000, 10.0
STAGES = tuple(f"{what}-{c.value}" for c in Coupling for what in ("train", "check"))


@torch.no_grad()
def check(run_dir, source: DataSource, batch: int = 500) -> dict:
    glow = tiltkit.load(run_dir, device="cpu").model
    glow.clamp_output = False
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([glow.decode(glow.sample_noise(batch, gen)) for _ in range(N_DRAWS // batch)]).flatten(1)
    finite = torch.isfinite(x).all(1)
    far = (x.nan_to_num(posinf=1e30, neginf=-1e30).abs() > TOO_FAR).any(1)
    test = source.tensor("test", None, glow.pixel_range)
    bits = torch.cat([glow.bits_per_dim(test[i:i + batch], gen) for i in range(0, len(test), batch)])
    return {"draws": N_DRAWS, "nonfinite_fraction": round(1 - finite.float().mean().item(), 4),
            "far_fraction": round(far.float().mean().item(), 4),
            "test_bits_per_dim": round(bits.mean().item(), 4), "test_n": len(test)}


def picture(run_dir, path) -> None:
    """64 prior draws at temperature 1, as the recipe decodes them (clamped to the pixel box)."""
    run = tiltkit.load(run_dir, device="cpu")
    viz.save_image(viz.image_grid(run.images(64, generator=torch.Generator().manual_seed(2)), 8), path, scale=2)


def section(r: dict) -> str:
    rows = []
    for c in Coupling:
        trained, checked = r["stages"].get(f"train-{c.value}"), r["stages"].get(f"check-{c.value}")
        if trained and checked:
            rows.append(f"| {c.value} | {trained['steps']} | {trained['train_seconds'] / 60:.1f} | "
                        f"{checked['test_bits_per_dim']:.3f} | {checked['nonfinite_fraction']:.1%} | "
                        f"{checked['far_fraction']:.1%} |")
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Recipe "
            f"`configs/fashion_glow_latent_ebm.yaml` (`base:`) with the coupling replaced; bounded: log σ = "
            f"−{SCALE_BOUND:g}·sigmoid(−(r + 2)). {N_DRAWS} prior draws at temperature 1, decoded without the "
            "output clamp; bits/dim on the 10,000 test images.\n\n"
            "| coupling | steps | train min | test bits/dim | non-finite draws | draws with a pixel beyond "
            f"abs {TOO_FAR:g} |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows)
            + "\n\nReproduce: `.venv/bin/python benchmarks/glow_coupling.py --stages train-bounded,check-bounded`.")


def main() -> None:
    args, stages, results = stage_cli(__doc__, STAGES, ROOT / "runs" / "glow-coupling", "glow_coupling.json")
    base_cfg = recipe(RECIPE)[0]
    source = DataSource.of(base_cfg)
    results.update({"cpu": cpu_model(), "torch": torch.__version__, "threads": args.threads})
    for stage in stages:
        what, coupling = stage.split("-", 1)
        run = args.out / coupling
        if what == "train":
            cfg = dataclasses.replace(base_cfg, model_kwargs={**base_cfg.model_kwargs, "coupling": coupling})

            def train(cfg=cfg, run=run):
                train_base(cfg, run, resume=(run / "config.yaml").exists())
                return {"steps": cfg.steps, "train_seconds": last_metrics(run)["time_s"]}
            run_stage(stage, results, train)
        else:
            run_stage(stage, results, lambda run=run: check(run, source))
    for c in Coupling:
        if f"train-{c.value}" in results["stages"] and (args.out / c.value).is_dir():
            picture(args.out / c.value, ROOT / "docs" / f"fashion_glow_{c.value}_samples.png")
    publish(results, "glow-coupling", section, "Glow's couplings: bounded scale against additive "
            "(`benchmarks/glow_coupling.py`)", stamp=bool(stages))  # `--stages ""` only re-renders


if __name__ == "__main__":
    main()
