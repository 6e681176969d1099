"""Denoising-EBM on Fashion-MNIST: two-stage vs semantic-only samples, the σ-ladder ablation, sampling time.

Same protocol as the other Fashion benchmarks: n samples per model against the test set, domain metrics
(the project's classifier) and Inception FID, every stage timed and written to the results JSON as it ends,
so an interrupted run resumes at its first unfinished stage.

    classifier        the domain classifier (cached per data set)
    debm              Algorithm 1 on configs/fashion_debm.yaml, with CPU_SETTINGS on top
    select            the sampling settings, by domain FID of SELECT_N samples against SELECT_REF *training*
                      images (the test set is not looked at): the semantic chain's length K, then the annealed
                      texture stage's σ_start and step constant (docs/debm_texture.md)
    sample            n two-stage samples x_T and, from the same chains, the semantic images x⁰ = h(z_K),
                      with the selected settings
    domain-MODEL      domain FID / KID / PRDC / class KL of MODEL ∈ {semantic, debm}
    inception-MODEL   Inception FID
    ablation-SMAX-S   the paper's Table 3 on domain FID: a shorter run per (σ_max, S), ABLATION_N samples
    ood-sigma         AUROC of −U_c(x, σ) against MNIST, interpolations and flips along a range of σ (the paper
                      fixes σ = 0.05), with its figure; the OOD table itself comes from benchmarks/ood.py
    timing            seconds for 64 samples: two-stage vs the same number of pixel-only Langevin steps
                      on U_c from uniform noise

The OOD table (−U_c beside the VAE and VAEBM scores) comes from benchmarks/ood.py with this run added
(`--run debm=runs/bench-debm/debm`). The section puts the VAE, latent-EBM and VAEBM rows of their own
benchmarks beside this one's.

    .venv/bin/python benchmarks/fashion_debm.py --n 2000
    .venv/bin/python benchmarks/fashion_debm.py --stages ablation-0.5-128,ablation-2-128
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import tiltkit
from common import (ROOT, cpu_model, evaluate_samples, figure, git_commit, run_stage, save_results, stage_cli,
                    write_block)
from tiltkit import viz
from tiltkit.config import DebmRunConfig, from_dict, to_dict
from tiltkit.data.images import to_model_range, to_uint8
from tiltkit.data.source import DataSource
from tiltkit.metrics.fid import FeatureStats, frechet_distance
from tiltkit.metrics.image_eval import Metric, classifier_for, embed
from tiltkit.metrics.ood import detection_metrics, draw_sets
from tiltkit.metrics.ood import pick
from tiltkit.samplers import AnnealedConfig, SamplerConfig
from tiltkit.training import train_debm

RECIPE = ROOT / "configs" / "fashion_debm.yaml"
# The recipe's network and chains (K = 20, T = 90 at batch 64) cost ~30 s an iteration on 2 CPU cores; this
# benchmark trains a narrower network with shorter chains, after 3,000 reconstruction-only steps, with
# α = 0.1 on the per-pixel energies. Without α (pretrained or not, lr 2e-4 or the paper's 5e-5) the
# contrastive updates drove the negatives' energies up without bound (U_s⁻ 500 → 1e4–1e5 within 100
# iterations) while the DAE's reconstruction loss rose 13 → 200+; with it, 80 pilot iterations held U_s⁻ near
# 340 and the reconstruction loss kept falling (10.5 → 7.7). The pixel chains step at 0.002, not the paper's
# η₂ = 0.01 (0.02 here): a first full run at 0.02 trained on negatives that were noise, and its two-stage samples
# were noise (domain FID 42.4 against 19.2 for the semantic images, 1,000 samples against training images).
CPU_SETTINGS = {"model_kwargs": {"width": 16, "latent_dim": 32, "decoder_width": 16},
                "pretrain_steps": 3000, "steps": 4500, "batch_size": 32, "lr": 0.0002, "alpha": 0.1,
                "latent_sampler": {"kind": "langevin", "steps": 10, "step_size": 0.2},
                "pixel_sampler": {"kind": "langevin", "steps": 20, "step_size": 0.002, "clamp": [-1.0, 1.0]},
                "sample_latent_sampler": {"kind": "langevin", "steps": 20, "step_size": 0.2},
                "sample_pixel_sampler": {"kind": "langevin", "steps": 40, "step_size": 0.002, "clamp": [-1.0, 1.0]},
                "sample_sigma": 0.1, "checkpoint_every": 100}
ABLATION = [(s_max, 128) for s_max in (0.5, 1, 2, 3)] + [(1, 64), (1, 256)]  # paper Table 3
ABLATION_PRETRAIN, ABLATION_STEPS, ABLATION_N = 1000, 200, 1000  # per setting: reconstruction-only, then Algorithm 1
TIMING_N = 64
OOD_SIGMAS, OOD_SETS, OOD_N = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0), ("mnist", "interp", "vflip"), 1000
OOD_TARGETS = {"mnist": 0.99, "interp": 0.95}
MODELS = {"semantic": "Denoising-EBM, semantic images x⁰ = h(z_K)", "debm": "Denoising-EBM, two-stage x_T"}
PAPER_TABLE3 = {(3, 128): 66.57, (2, 128): 60.81, (1, 128): 50.02, (0.5, 128): 55.23}  # CIFAR-10, 1k-sample FID
OTHERS = [  # (label, results file, domain stage, inception stage, key): rows of the other Fashion benchmarks
    ("VAE (latent-EBM benchmark)", "fashion_mnist_latent_ebm.json", "domain", "inception", "vae"),
    ("VAE + latent EBM", "fashion_mnist_latent_ebm.json", "domain", "inception", "tilted"),
    ("VAEBM", "fashion_mnist_vaebm.json", "domain-vaebm", "inception-vaebm", "model"),
]
SELECT_N, SELECT_REF = 1000, 5000
SELECT_LATENT_STEPS = (0, 5, 20)  # 0: no semantic chain, the semantic image is h(z⁰)
# Step constants below the chain's stability bound 4·σ_L² = 4e-4 (σ_L = 0.01; samplers/annealed.py): the grid's
# earlier top value 6.4e-4 won on domain FID by diverging into the clamp (saturated silhouettes, `unstable_try`).
SELECT_TEXTURE = [AnnealedConfig(s0, levels=10, steps=3, step_size=eps, clamp=(-1.0, 1.0))
                  for s0 in (0.1, 0.2, 0.4) for eps in (4e-5, 1.6e-4, 3.2e-4)]
STAGES = ("classifier", "debm", "select", "sample", *(f"{s}-{m}" for s in ("domain", "inception") for m in MODELS),
          *(f"ablation-{a:g}-{b}" for a, b in ABLATION), "ood-sigma", "timing")


def config(**over) -> DebmRunConfig:
    values = {**yaml.safe_load(RECIPE.read_text())["debm"], **CPU_SETTINGS, **over}
    values["model_kwargs"] = {**yaml.safe_load(RECIPE.read_text())["debm"]["model_kwargs"],
                              **CPU_SETTINGS["model_kwargs"], **over.get("model_kwargs", {})}
    return from_dict(DebmRunConfig, values, str(RECIPE))


def train(cfg: DebmRunConfig, run: Path) -> dict:
    train_debm(cfg, run, resume=(run / "config.yaml").exists())
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return {"steps": last["step"], "train_seconds": last["time_s"]}


def select(out: Path, source: DataSource) -> dict:
    """Domain FID against SELECT_REF training images of SELECT_N semantic images for each K of
    SELECT_LATENT_STEPS, then of the texture stage from the best K's images for each of SELECT_TEXTURE."""
    run = tiltkit.load(out / "debm", device="cpu")
    cfg, model = run.cfg, run.model
    clf = classifier_for(source)
    ref = FeatureStats.from_features(embed(clf, pick(source.images("train").x, SELECT_REF,
                                                     torch.Generator().manual_seed(11)))[0])
    fid = lambda x: frechet_distance(FeatureStats.from_features(embed(clf, to_uint8(x, model.pixel_range))[0]), ref)  # noqa: E731
    gen = torch.Generator().manual_seed(2)
    z0 = model.sample_noise(SELECT_N, gen)
    sigma = torch.full((SELECT_N,), cfg.sample_sigma or float(model.sigmas.median()))
    semantic, images = {}, {}
    for k in SELECT_LATENT_STEPS:
        latent = SamplerConfig("langevin", k, cfg.sample_latent_sampler.step_size) if k else None
        z = latent.run(lambda z: model.semantic_energy(z, sigma, generator=gen), z0, gen).noise if k else z0
        with torch.no_grad():
            images[k] = model.decode(z)
        semantic[k] = round(fid(images[k]), 4)
    k = min(semantic, key=semantic.get)
    texture = []
    for a in SELECT_TEXTURE:
        x = model.refine(images[k], a, torch.Generator().manual_seed(3)).noise
        texture.append({**to_dict(a), "fid": round(fid(x), 4)})
    best = min(texture, key=lambda t: t["fid"])
    return {"n": SELECT_N, "reference": f"{SELECT_REF} training images", "semantic_fid": semantic,
            "latent_steps": k, "texture": texture,
            "chosen": {"latent_steps": k, "annealed": {key: v for key, v in best.items() if key != "fid"}}}


def chosen(cfg: DebmRunConfig, results: dict) -> tuple[SamplerConfig | None, AnnealedConfig]:
    """The sampling settings the select stage chose (the semantic chain None where K = 0)."""
    pick_ = results["stages"]["select"]["chosen"]
    k = pick_["latent_steps"]
    latent = SamplerConfig("langevin", k, cfg.sample_latent_sampler.step_size) if k else None
    return latent, from_dict(AnnealedConfig, pick_["annealed"], "select")


def sample(out: Path, n: int, results: dict, chunk: int = 500) -> dict:
    """Two-stage samples and their semantic images, from the same chains, with the selected settings."""
    run = tiltkit.load(out / "debm", device="cpu")
    cfg, model = run.cfg, run.model
    latent, annealed = chosen(cfg, results)
    gen = torch.Generator().manual_seed(1)
    parts: dict[str, list] = {"semantic": [], "debm": []}
    t0 = time.perf_counter()
    for lo in range(0, n, chunk):
        s = model.sample(min(chunk, n - lo), latent, annealed, gen, cfg.sample_sigma)
        parts["semantic"].append(to_uint8(s.semantic, model.pixel_range))
        parts["debm"].append(to_uint8(s.x, model.pixel_range))
    seconds = time.perf_counter() - t0
    for key, xs in parts.items():
        np.savez_compressed(out / f"samples_{key}.npz", x=torch.cat(xs).numpy())
    grid = torch.Generator().manual_seed(7)
    s = model.sample(64, latent, annealed, grid, cfg.sample_sigma)
    viz.compare_figure([("semantic image h(z_K)", to_uint8(s.semantic, model.pixel_range)),
                        ("two-stage sample x_T", to_uint8(s.x, model.pixel_range))],
                       ROOT / "docs" / "fashion_mnist_debm.png", nrow=8)
    t = model.sample(8, latent, annealed, grid, cfg.sample_sigma, return_trajectory=True, every=3)
    viz.save_image(viz.trajectory_strip([to_uint8(f, model.pixel_range) for f in t.trajectory]),
                   ROOT / "docs" / "fashion_mnist_debm_chains.png", scale=2)
    return {"sample_seconds": round(seconds, 1), "sampler": {
        "latent": to_dict(latent) if latent else None, "annealed": to_dict(annealed), "sigma": cfg.sample_sigma}}


def ablation(sigma_max: float, n_sigmas: int, out: Path, source: DataSource) -> dict:
    """A shorter run at (σ_max, S) and the domain FID of ABLATION_N two-stage samples against the test set."""
    run = out / f"ablation-{sigma_max:g}-{n_sigmas}"
    info = train(config(pretrain_steps=ABLATION_PRETRAIN, steps=ABLATION_PRETRAIN + ABLATION_STEPS,
                        model_kwargs={"sigma_max": sigma_max, "n_sigmas": n_sigmas}), run)
    loaded = tiltkit.load(run, device="cpu")
    cfg, model = loaded.cfg, loaded.model
    with torch.no_grad():
        s = model.sample(ABLATION_N, cfg.sample_latent_sampler, cfg.sample_pixel_sampler,
                         torch.Generator().manual_seed(1), cfg.sample_sigma)
    clf = classifier_for(source)
    test = FeatureStats.from_features(embed(clf, source.images("test").x)[0])
    fids = {key: frechet_distance(FeatureStats.from_features(embed(clf, to_uint8(x, model.pixel_range))[0]), test)
            for key, x in (("semantic", s.semantic), ("debm", s.x))}
    return {**info, "fid": fids["debm"], "semantic_fid": fids["semantic"]}


@torch.no_grad()
def ood_sigma(out: Path, source: DataSource) -> dict:
    """AUROC of −U_c(x, σ) for each σ of OOD_SIGMAS and each set of OOD_SETS, OOD_N test images against OOD_N
    OOD images (the images benchmarks/ood.py scores at seed 0), one ε draw per image; and its figure."""
    model = tiltkit.load(out / "debm", device="cpu").model
    x_in, drawn = draw_sets(source.images("test").x, source.name, list(OOD_SETS), model.data_shape, OOD_N)
    sets = {name: x for name, (x, _, _) in drawn.items()}

    def score(x: torch.Tensor, sigma: float) -> np.ndarray:
        x = to_model_range(x, model.pixel_range)
        gen = torch.Generator().manual_seed(0)
        return torch.cat([model.ood_score(b, sigma, gen) for b in x.split(500)]).double().numpy()

    auroc = {}
    for sigma in OOD_SIGMAS:
        s_in = score(x_in, sigma)
        auroc[f"{sigma:g}"] = {k: round(detection_metrics(s_in, score(x, sigma))["auroc"], 4) for k, x in sets.items()}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name in OOD_SETS:
        ax.plot(OOD_SIGMAS, [auroc[f"{s:g}"][name] for s in OOD_SIGMAS], "o-", label=name)
    ax.axvline(0.05, color="gray", ls=":", label="paper's σ = 0.05")
    for name, target in OOD_TARGETS.items():
        ax.axhline(target, color="gray", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="σ of the texture energy U_c(x, σ)", ylabel="AUROC of −U_c, Fashion-MNIST in",
           ylim=(0, 1.02), title="Denoising-EBM OOD detection along σ (targets dashed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "fashion_mnist_debm_ood_sigma.png", dpi=120)
    plt.close(fig)
    return {"n": OOD_N, "auroc": auroc}


def timing(out: Path, results: dict) -> dict:
    """Seconds for TIMING_N samples: two-stage with the selected settings (K latent steps, then the annealed
    texture stage) vs the paper's K latent + T pixel steps vs K + T pixel steps on U_c from uniform noise."""
    run = tiltkit.load(out / "debm", device="cpu")
    cfg, model = run.cfg, run.model
    latent, annealed = chosen(cfg, results)
    gen = torch.Generator().manual_seed(3)
    t0 = time.perf_counter()
    model.sample(TIMING_N, latent, annealed, gen, cfg.sample_sigma)
    selected = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.sample(TIMING_N, cfg.sample_latent_sampler, cfg.sample_pixel_sampler, gen, cfg.sample_sigma)
    two_stage = time.perf_counter() - t0
    steps = cfg.sample_latent_sampler.steps + cfg.sample_pixel_sampler.steps
    pixel = SamplerConfig("langevin", steps, cfg.sample_pixel_sampler.step_size, clamp=cfg.sample_pixel_sampler.clamp)
    sigma = torch.full((TIMING_N,), cfg.sample_sigma or float(model.sigmas.median()))
    x0 = torch.rand(TIMING_N, *model.data_shape, generator=gen) * 2 - 1
    t0 = time.perf_counter()
    pixel.run(lambda x: model.texture_energy(x, sigma, generator=gen), x0, gen)
    return {"n": TIMING_N, "steps": steps, "selected_seconds": round(selected, 2),
            "selected_steps": f"{latent.steps if latent else 0} latent + {annealed.levels}×{annealed.steps} denoiser passes",
            "two_stage_seconds": round(two_stage, 2),
            "pixel_only_seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    args, stages, results = stage_cli(__doc__, STAGES, ROOT / "runs" / "bench-debm", "fashion_mnist_debm.json")
    out = args.out
    source = DataSource.of(config())
    n = min(args.n, len(source.images("train").x))
    results.update({"source": source.images("train").source, "cpu": cpu_model(),
                    "threads": args.threads, "torch": torch.__version__, "recipe": str(RECIPE.relative_to(ROOT)),
                    "cpu_settings": CPU_SETTINGS, "ablation_pretrain_steps": ABLATION_PRETRAIN,
                    "ablation_steps": ABLATION_STEPS, "ablation_n": ABLATION_N})
    if any(s.startswith("sample") for s in stages) or "n" not in results:  # n: that of the samples evaluated
        results["n"] = n
    for stage in stages:
        if stage == "classifier":
            run_stage(stage, results, lambda: (classifier_for(source, quiet=False),
                                               {"checksum": source.images("train").checksum()})[1])
        elif stage == "debm":
            run_stage(stage, results, lambda: train(config(), out / "debm"))
        elif stage == "select":
            run_stage(stage, results, lambda: select(out, source))
        elif stage == "sample":
            run_stage(stage, results, lambda: sample(out, n, results))
        elif stage.startswith("ablation-"):
            _, s_max, s = stage.split("-")
            run_stage(stage, results, lambda s_max=float(s_max), s=int(s): ablation(s_max, s, out, source))
        elif stage == "ood-sigma":
            run_stage(stage, results, lambda: ood_sigma(out, source))
        elif stage == "timing":
            run_stage(stage, results, lambda: timing(out, results))
        else:
            what, key = stage.split("-", 1)
            fn = evaluate_samples([Metric.INCEPTION_FID] if what == "inception" else
                                  [Metric.FID, Metric.KID, Metric.PRDC, Metric.CLASSES])
            run_stage(stage, results, lambda fn=fn, key=key: fn(key, out, n, source, results))
    finish(results)


def finish(results: dict) -> None:
    checks = {}
    for metric in ("fid", "inception_fid"):
        two, sem = figure(results, "debm", metric), figure(results, "semantic", metric)
        checks[f"two-stage {metric} < semantic-only's"] = None if two is None or sem is None else two < sem
    at_paper = results["stages"].get("ood-sigma", {}).get("auroc", {}).get("0.05")
    for name, target in OOD_TARGETS.items():
        checks[f"AUROC of −U_c(x, 0.05), {name}, ≥ {target}"] = None if at_paper is None else at_paper[name] >= target
    results.update({"checks": checks, "date": datetime.date.today().isoformat(), "commit": git_commit()})
    save_results(results)
    write_block("fashion-debm", section(results), "Fashion-MNIST: Denoising-EBM (`benchmarks/fashion_debm.py`)")
    print(json.dumps({k: v for k, v in results.items() if k not in ("stages", "path")}, indent=1))


DOMAIN_COLUMNS = ("fid", "recall", "coverage", "class_kl")


def row(label: str, inception: float | None, domain: dict, seconds: str) -> str:
    fmt = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    return (f"| {label} | {fmt(inception)} | {fmt(domain.get('fid'))} | {fmt(domain.get('recall'), 3)} | "
            f"{fmt(domain.get('coverage'), 3)} | {fmt(domain.get('class_kl'), 3)} | {seconds} |")


def other_rows() -> list[str]:
    rows = []
    for label, file, dom, inc, key in OTHERS:
        path = ROOT / "benchmarks" / "results" / file
        st = json.loads(path.read_text())["stages"] if path.exists() else {}
        rows.append(row(f"{label} (`{file}`)", st.get(inc, {}).get(key, {}).get("inception_fid"),
                        st.get(dom, {}).get(key, {}), ""))
    return rows


def section(r: dict) -> str:
    st = r["stages"]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    rows = ["| model | Inception FID | domain FID | recall | coverage | class KL | sampling s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in MODELS.items():
        s = st.get("sample", {})
        rows.append(row(label, figure(r, key, "inception_fid"), st.get(f"domain-{key}", {}).get("model", {}),
                        f"{s['sample_seconds']:.0f}" if s else "–"))
    rows += other_rows()
    sel = st.get("select")
    select_text = ("Sampling settings chosen on " + f"{sel['n']} samples against {sel['reference']} (domain FID): "
                   f"semantic chain K = {sel['latent_steps']} (FID by K: "
                   + ", ".join(f"{k}: {v:.2f}" for k, v in sel["semantic_fid"].items()) + "); texture stage "
                   + ", ".join(f"σ_start {t['sigma_start']:g}, ε {t['step_size']:g}: {t['fid']:.2f}" for t in sel["texture"])
                   + ".") if sel else "Sampling settings: not yet selected."
    abl = ["| σ_max | S | domain FID, two-stage | domain FID, semantic | paper (CIFAR-10, FID 1k) |",
           "|---:|---:|---:|---:|---:|"]
    for a, b in ABLATION:
        s = st.get(f"ablation-{a:g}-{b}", {})
        abl.append(f"| {a:g} | {b} | {fmt(s.get('fid'))} | {fmt(s.get('semantic_fid'))} | "
                   f"{PAPER_TABLE3.get((a, b), '–')} |")
    ood = st.get("ood-sigma")
    ood_rows = ["| σ | " + " | ".join(OOD_SETS) + " |", "|---:|" + "---:|" * len(OOD_SETS)]
    ood_rows += [f"| {sig}{' (paper)' if sig == '0.05' else ''} | " + " | ".join(f"{v[k]:.3f}" for k in OOD_SETS) + " |"
                 for sig, v in (ood["auroc"].items() if ood else [])]
    ood_text = (f"AUROC of −U_c(x, σ) against {ood['n']} images per set, Fashion-MNIST test images in "
                f"(`docs/fashion_mnist_debm_ood_sigma.png`):\n\n" + "\n".join(ood_rows) if ood else
                "OOD along σ: not yet run.")
    t = st.get("timing")
    timing_line = (f"Time for {t['n']} samples: the selected sampler ({t['selected_steps']}) {t['selected_seconds']} s; "
                   f"the paper's two-stage chain, {t['steps']} Langevin steps in all, {t['two_stage_seconds']} s; "
                   f"pixel-only from uniform noise {t['pixel_only_seconds']} s." if t else "Timing: not yet run.")
    times = " · ".join(f"{k} {v['seconds'] / 60:.1f} min" + (f" ({v['threads']} thread{'s' * (v['threads'] != 1)})"
                                                            if "threads" in v else "") for k, v in st.items())
    checks = "; ".join(f"{k}: {'met' if ok else 'NOT met' if ok is False else 'not yet run'}"
                       for k, ok in r["checks"].items())
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Data: "
            f"{r['source']}; recipe `{r['recipe']}` with the benchmark's CPU_SETTINGS on top; {r['n']} samples "
            f"against the test set (the other rows: their benchmarks' own n).\n\n" + "\n".join(rows) +
            f"\n\n{select_text}" +
            f"\n\nAblation (paper Table 3), per setting {r['ablation_pretrain_steps']} reconstruction-only iterations "
            f"then {r['ablation_steps']} of Algorithm 1 (the paper: full training), {r['ablation_n']} samples, "
            f"domain FID:\n\n" + "\n".join(abl) + f"\n\n{ood_text}\n\n{timing_line}\n\nStage wall times: {times}.\n\n"
            f"Targets: {checks}.\n")


if __name__ == "__main__":
    main()
