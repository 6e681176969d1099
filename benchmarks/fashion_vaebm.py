"""VAEBM, its two proposal extensions and the pixel-EBM baseline on Fashion-MNIST, end to end.

Same protocol as benchmarks/fashion_latent_ebm.py: n samples per model against the test set, domain
metrics (the project's classifier) and Inception FID, every stage timed on its own (2 CPU threads)
and written to the results JSON as it ends, so an interrupted run resumes at its first unfinished stage.

    classifier       the domain classifier (cached per data set)
    vae              stage 1: the Gaussian-decoder VAE (configs/fashion_vaebm.yaml, `base:`)
    vaebm            stage 2: the pixel energy, Langevin over (ε_z, ε_x) (`tilt:`)
    vae-bernoulli    the latent-EBM benchmark's Bernoulli VAE (configs/fashion_vaebm_bernoulli.yaml, `base:`;
                     copied from runs/bench-fashion-mnist/vae when that run exists with the same recipe)
    vaebm-bernoulli  the same pixel energy on it, Langevin over ε_z (x = μ(ε_z))
    joint            the same with a joint energy E(x, z) (proposal extension 1)
    pixel            the pixel EBM baseline (configs/fashion_pixel_ebm.yaml)
    sample-MODEL     n samples of each model; `vaebm-hmc` samples the VAEBM energy with HMC at the
                     Langevin sampler's number of gradient evaluations (proposal extension 2)
    domain-MODEL     domain FID / KID / PRDC / class KL (the first also gives the train-vs-test floor)
    inception-MODEL  Inception FID (test statistics cached)

Checks, for each VAEBM (Gaussian and Bernoulli VAE): FID ≤ 0.5 × its own VAE's on both scales, and below
the latent EBM's result (benchmarks/results/fashion_mnist_latent_ebm.json).

    .venv/bin/python benchmarks/fashion_vaebm.py                        # everything (hours on 2 cores)
    .venv/bin/python benchmarks/fashion_vaebm.py --stages classifier,vae,vaebm,sample-vae,sample-vaebm
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import tiltkit
from common import (ROOT, cpu_model, evaluate_samples, figure, git_commit, recipe, run_stage, save_results,
                    stage_cli, validation_curve, write_block)
from tiltkit import viz
from tiltkit.config import BaseRunConfig, TiltRunConfig, from_dict
from tiltkit.data.images import to_uint8
from tiltkit.data.source import DataSource
from tiltkit.methods import read_run
from tiltkit.metrics.image_eval import Metric, classifier_for
from tiltkit.samplers import SamplerConfig, SamplerKind
from tiltkit.training import BASE, TILT, train_base, train_tilt

VAEBM_RECIPE = ROOT / "configs" / "fashion_vaebm.yaml"
BERNOULLI_RECIPE = ROOT / "configs" / "fashion_vaebm_bernoulli.yaml"
LATENT_VAE = ROOT / "runs" / "bench-fashion-mnist" / "vae"
PIXEL_RECIPE = ROOT / "configs" / "fashion_pixel_ebm.yaml"
LATENT_RESULT = ROOT / "benchmarks" / "results" / "fashion_mnist_latent_ebm.json"
JOINT = {"energy": "conv-small-joint", "energy_kwargs": {"latent_dim": 100, "width": 32, "hidden": 128,
                                                         "weight_norm": True}}
HMC_LEAPFROG = 5
MODELS = {  # key: (label, run folder)
    "vae": ("VAE (Gaussian decoder; samples μ(z))", "vae"),
    "vaebm": ("VAEBM (Langevin over (ε_z, ε_x))", "vaebm"),
    "vaebm-hmc": ("VAEBM sampled by HMC, equal gradient evaluations", "vaebm"),
    "joint": ("VAEBM + joint energy E(x, z)", "joint"),
    "vae-bernoulli": ("VAE (Bernoulli decoder, the latent-EBM benchmark's; samples μ(z))", "vae-bernoulli"),
    "vaebm-bernoulli": ("VAEBM on the Bernoulli VAE (Langevin over ε_z)", "vaebm-bernoulli"),
    "pixel": ("pixel EBM (IGEBM-style, flat prior)", "pixel"),
}
PAPER = {"pixel": "39.3 (tilting paper, \"EBM on data\")"}
PAIRS = (("vae", "vaebm"), ("vae-bernoulli", "vaebm-bernoulli"))  # (VAE, its VAEBM), checked alike
TRAIN_STAGES = ("classifier", "vae", "vaebm", "joint", "vae-bernoulli", "vaebm-bernoulli", "pixel")
STAGES = TRAIN_STAGES + tuple(f"{s}-{m}" for s in ("sample", "domain", "inception") for m in MODELS)


def train_vae(cfg: BaseRunConfig, run: Path, copy_from: Path | None = None) -> dict:
    """Stage 1; a finished run of the same recipe at `copy_from` is copied instead of trained again."""
    same = copy_from and (copy_from / "config.yaml").exists() and read_run(copy_from) == (BASE, cfg)
    if same and not run.exists():
        shutil.copytree(copy_from, run)
    train_base(cfg, run, resume=(run / "config.yaml").exists())
    return {"steps": cfg.steps, **({"copied_from": str(copy_from)} if same else {})}


def hmc_like(sampler: SamplerConfig) -> SamplerConfig:
    """HMC with the Langevin sampler's gradient evaluations: steps/L iterations of L leapfrogs, h = √η
    (one leapfrog step of size √η moves like one Langevin step of size η)."""
    return SamplerConfig(SamplerKind.HMC, steps=max(1, sampler.steps // HMC_LEAPFROG),
                         step_size=sampler.step_size ** 0.5, n_leapfrog=HMC_LEAPFROG)


def main() -> None:
    args, stages, results = stage_cli(__doc__, STAGES, ROOT / "runs" / "bench-vaebm", "fashion_mnist_vaebm.json")
    out = args.out
    base_cfg, vaebm_values = recipe(VAEBM_RECIPE)
    bernoulli_cfg, bernoulli_values = recipe(BERNOULLI_RECIPE)
    pixel_values = yaml.safe_load(PIXEL_RECIPE.read_text())["tilt"]
    source = DataSource.of(base_cfg)
    n = min(args.n, len(source.images("train").x))
    results.update({"source": source.images("train").source, "n": n, "cpu": cpu_model(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "recipes": [str(r.relative_to(ROOT)) for r in (VAEBM_RECIPE, BERNOULLI_RECIPE, PIXEL_RECIPE)]})
    tilt_cfgs = {
        "vaebm": from_dict(TiltRunConfig, {**vaebm_values, "base": str(out / "vae")}, str(VAEBM_RECIPE)),
        "joint": from_dict(TiltRunConfig, {**vaebm_values, **JOINT, "base": str(out / "vae")}, "joint"),
        "vaebm-bernoulli": from_dict(TiltRunConfig, {**bernoulli_values, "base": str(out / "vae-bernoulli")},
                                     str(BERNOULLI_RECIPE)),
        "pixel": from_dict(TiltRunConfig, pixel_values, str(PIXEL_RECIPE)),
    }

    for stage in stages:
        if stage == "classifier":
            run_stage(stage, results, lambda: (classifier_for(source, quiet=False),
                                               {"checksum": source.images("train").checksum()})[1])
        elif stage == "vae":
            run_stage(stage, results, lambda: train_vae(base_cfg, out / "vae"))
        elif stage == "vae-bernoulli":
            run_stage(stage, results, lambda: train_vae(bernoulli_cfg, out / stage, copy_from=LATENT_VAE))
        elif stage in tilt_cfgs:
            run_stage(stage, results, lambda stage=stage: train_energy(tilt_cfgs[stage], out / stage))
        else:
            what, key = stage.split("-", 1)
            run_stage(stage, results, lambda what=what, key=key: STAGE_FNS[what](key, out, n, source, results))
    finish(results)


def train_energy(cfg: TiltRunConfig, run: Path) -> dict:
    train_tilt(cfg, run, resume=(run / "config.yaml").exists())
    points = validation_curve(run)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    best = min(points, key=lambda q: q["val_fid"]) if points else None
    return {"curve": points, "best_step": best and best["step"], "steps_run": last["step"]}


def sample(key: str, out: Path, n: int, source: DataSource, results: dict) -> dict:
    run = tiltkit.load(out / MODELS[key][1], device="cpu")
    if key == "vaebm-hmc":
        hmc = hmc_like(run.cfg.sample_sampler)
        run = dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, sample_sampler=hmc))
    t0 = time.perf_counter()
    x = run.images(n, generator=torch.Generator().manual_seed(1), quiet=False)
    seconds = time.perf_counter() - t0
    np.savez_compressed(out / f"samples_{key}.npz", x=x.numpy())
    info = {"sample_seconds": round(seconds, 1)}
    if run.method is TILT:
        sampler = run.cfg.sample_sampler
        info["sampler"] = {k: getattr(v, "value", v) for k, v in dataclasses.asdict(sampler).items()}
        info["gradient_evaluations"] = sampler.gradient_evaluations()
    if key in ("vaebm", "vaebm-bernoulli"):
        picture(run, ROOT / "docs" / f"fashion_mnist_{key.replace('-', '_')}.png")
    return info


def picture(run: tiltkit.Run, path: Path) -> None:
    """64 VAE samples (decoder means) and the VAEBM samples started from the same noise, side by side."""
    gen = torch.Generator().manual_seed(7)
    noise = run.model.sample_noise(64, gen)
    with torch.no_grad():
        base = to_uint8(run.base.decode_mean(noise), run.base.pixel_range).cpu()
    tilted = run.images(64, generator=gen, noise=noise)
    viz.compare_figure([("VAE (decoder mean)", base), ("VAEBM", tilted)], path, nrow=8)


STAGE_FNS = {"sample": sample, "domain": evaluate_samples([Metric.FID, Metric.KID, Metric.PRDC, Metric.CLASSES]),
             "inception": evaluate_samples([Metric.INCEPTION_FID])}


def finish(results: dict) -> None:
    latent = json.loads(LATENT_RESULT.read_text())["stages"] if LATENT_RESULT.exists() else {}
    checks, results["ratios"] = {}, {}
    for vae_key, vaebm_key in PAIRS:
        for metric, latent_stage in (("fid", "domain"), ("inception_fid", "inception")):
            vae, vaebm = figure(results, vae_key, metric), figure(results, vaebm_key, metric)
            ratio = vaebm / vae if vae and vaebm is not None else None
            results["ratios"][f"{vaebm_key} {metric}"] = ratio and round(ratio, 4)
            checks[f"{vaebm_key} / {vae_key} {metric} <= 0.5"] = None if ratio is None else ratio <= 0.5
            ref = latent.get(latent_stage, {}).get("tilted", {}).get(metric)
            checks[f"{vaebm_key} {metric} < latent EBM's ({ref:.2f})" if ref else
                   f"{vaebm_key} {metric} < latent EBM's"] = None if vaebm is None or ref is None else vaebm < ref
    for old in ("fid_ratio", "inception_fid_ratio"):
        results.pop(old, None)
    results.update({"checks": checks, "date": datetime.date.today().isoformat(), "commit": git_commit()})
    save_results(results)
    write_block("fashion-vaebm", section(results), "Fashion-MNIST: VAEBM, extensions and the pixel EBM "
                "(`benchmarks/fashion_vaebm.py`)")
    print(json.dumps({k: v for k, v in results.items() if k not in ("stages", "path")}, indent=1))


def section(r: dict) -> str:
    st = r["stages"]
    fmt = lambda v, f=".2f": "–" if v is None else format(v, f)  # noqa: E731
    rows = ["| model | Inception FID | domain FID | KID | precision | recall | coverage | class KL | "
            "sampling (grad evals, s) | paper |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    floor = next((s["floor"] for k, s in st.items() if k.startswith("domain-") and "floor" in s), None)
    if floor:
        rows.append(f"| real: {r['n']} train vs test images (floor) | – | {floor['fid']:.2f} | {floor['kid']:.4f} | "
                    f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['coverage']:.3f} | "
                    f"{floor['class_kl']:.4f} | | |")
    for key, (label, _) in MODELS.items():
        d = st.get(f"domain-{key}", {}).get("model", {})
        s = st.get(f"sample-{key}", {})
        cost = f"{s.get('gradient_evaluations', 0)}, {s['sample_seconds']:.0f}" if s else "–"
        rows.append(f"| {label} | {fmt(figure(r, key, 'inception_fid'))} | {fmt(d.get('fid'))} | "
                    f"{fmt(d.get('kid'), '.4f')} | {fmt(d.get('precision'), '.3f')} | {fmt(d.get('recall'), '.3f')} | "
                    f"{fmt(d.get('coverage'), '.3f')} | {fmt(d.get('class_kl'), '.4f')} | {cost} | "
                    f"{PAPER.get(key, '')} |")
    steps = " · ".join(f"{k}: best step {st[k]['best_step']} of {st[k]['steps_run']}"
                       for k in ("vaebm", "joint", "vaebm-bernoulli", "pixel") if k in st)
    times = " · ".join(f"{k} {v['seconds'] / 60:.1f} min" if "copied_from" not in v else
                       f"{k} copied from `{Path(v['copied_from']).relative_to(ROOT)}`" for k, v in st.items())
    ratios = "; ".join(f"{k} {v if v is not None else '–'}" for k, v in r["ratios"].items())
    checks = "; ".join(f"{k}: {'met' if ok else 'NOT met' if ok is False else 'not yet run'}"
                       for k, ok in r["checks"].items())
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Data: "
            f"{r['source']}; recipes {', '.join(f'`{x}`' for x in r['recipes'])}; {r['n']} samples per model "
            f"against the test set. Energy trainings (validation domain FID every `eval_every` steps, the best "
            f"kept): {steps}.\n\n" + "\n".join(rows) +
            f"\n\nRatios VAEBM / its VAE: {ratios}. Published anchors are for CIFAR-10 only "
            f"(NVAE ≈ 51.7 → VAEBM 12.19)."
            f"\n\nStage wall times: {times}.\n\nTargets: {checks}.\n")


if __name__ == "__main__":
    main()
