"""The Fashion-MNIST latent-EBM recipe's two training stages, as they are against a faster setting, on one machine.

Same recipe (configs/fashion_vae_latent_ebm.yaml), data, seed and thread count for every stage:

    vae-VARIANT   the base VAE with VAE_VARIANTS[VARIANT]'s options on top of the recipe's
    ebm-VARIANT   the latent EBM on the `vae-reference` VAE with EBM_VARIANTS[VARIANT]'s options

Each stage records its run's own training clock and its validation domain FID (the EBM recipe's validator:
`eval_n` samples against `val_size` held-out training images; for a VAE, its own samples at step 0 of an
energy run; for an EBM, its best evaluation, the checkpoint the recipe keeps). A variant is faster when its
training clock is shorter; it is as good when its FID is within the spread of the reference.
Writes benchmarks/results/train_speed.json and the `train-speed` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/train_speed.py [--stages vae-reference,ebm-reference,ebm-compiled-bf16]
"""

from __future__ import annotations

import dataclasses

import torch

from common import (ROOT, base_val_fid, cpu_model, last_metrics, publish, recipe, run_stage, stage_cli,
                    validation_curve)
from tiltkit.config import TiltRunConfig, from_dict
from tiltkit.data.source import DataSource
from tiltkit.training import train_base, train_tilt

RECIPE = ROOT / "configs" / "fashion_vae_latent_ebm.yaml"
VAE_VARIANTS = {"reference": {}}  # bf16, channels-last and torch.compile were not faster (BENCHMARKS.md notes)
EBM_VARIANTS = {"reference": {"compile": "off", "precision": "32"},  # the recipe's chains until 2026-11-30
                "compiled-bf16": {"compile": "on", "compile_mode": "autograd", "precision": "bf16"}}
STAGES = tuple(f"vae-{v}" for v in VAE_VARIANTS) + tuple(f"ebm-{v}" for v in EBM_VARIANTS)


def main() -> None:
    args, stages, results = stage_cli(__doc__, STAGES, ROOT / "runs" / "train-speed", "train_speed.json")
    base_cfg, tilt_values = recipe(RECIPE)
    source = DataSource.of(base_cfg)
    results.update({"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
                    "variants": {"vae": VAE_VARIANTS, "ebm": EBM_VARIANTS}})
    reference_vae = args.out / "vae-reference"
    for stage in stages:
        kind, variant = stage.split("-", 1)
        run = args.out / stage
        if kind == "vae":
            cfg = dataclasses.replace(base_cfg, **VAE_VARIANTS[variant])
            tilt_cfg = from_dict(TiltRunConfig, {**tilt_values, "base": str(run)}, str(RECIPE))

            def fn(cfg=cfg, run=run, tilt_cfg=tilt_cfg):
                train_base(cfg, run, resume=(run / "config.yaml").exists())
                return {"train_seconds": last_metrics(run)["time_s"], "val_fid": base_val_fid(tilt_cfg, source)}
        else:
            cfg = from_dict(TiltRunConfig, {**tilt_values, **EBM_VARIANTS[variant], "base": str(reference_vae)},
                            str(RECIPE))

            def fn(cfg=cfg, run=run):
                train_tilt(cfg, run, resume=(run / "config.yaml").exists())
                curve = validation_curve(run)
                best = min(curve, key=lambda q: q["val_fid"])
                return {"train_seconds": last_metrics(run)["time_s"], "val_fid": best["val_fid"],
                        "best_step": best["step"], "curve": curve}
        run_stage(stage, results, fn)
    publish(results, "train-speed", section, "Training speed: the Fashion-MNIST recipe's VAE and EBM stages "
            "(`benchmarks/train_speed.py`)", stamp=bool(stages))


def section(r: dict) -> str:
    st, rows = r["stages"], []
    for kind, variants in r["variants"].items():
        ref = st.get(f"{kind}-reference")
        for name, options in variants.items():
            got = st.get(f"{kind}-{name}")
            if got is None:
                continue
            speedup = f"{ref['train_seconds'] / got['train_seconds']:.2f}×" if ref else "–"
            rows.append(f"| {kind} | {name} | {options or 'the recipe'} | {got['train_seconds'] / 60:.1f} | "
                        f"{speedup} | {got['val_fid']:.3f} |")
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Recipe "
            "`configs/fashion_vae_latent_ebm.yaml`; every EBM on the reference VAE. Training minutes: the run's own "
            "clock; validation FID: domain FID of the recipe's `eval_n` samples against its `val_size` held-out "
            "images (a VAE: its own samples; an EBM: its best evaluation, the kept checkpoint).\n\n"
            "| stage | variant | options | train min | speed-up | validation FID |\n|---|---|---|---:|---:|---:|\n"
            + "\n".join(rows) + "\n\nReproduce: `.venv/bin/python benchmarks/train_speed.py`.")


if __name__ == "__main__":
    main()
