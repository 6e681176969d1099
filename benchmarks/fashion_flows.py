"""Flow bases tilted by latent EBMs on Fashion-MNIST: the tilting paper's Table 1 rows "GLOW (+ EBM)" and
"GLF (+ EBM)", with Glow at temperature 0.7 as the cheap alternative and the exact data-space tilt.

Same protocol as benchmarks/fashion_latent_ebm.py: n samples per model against the test set, domain metrics
(the project's classifier) and Inception FID, every stage timed on its own and written to the results JSON
as it ends, so an interrupted run resumes at its first unfinished stage.

    classifier       the domain classifier (cached per data set)
    glow, glf        the bases (recipe `base:` sections); their time is the run's own training clock
    glow-ebm         latent EBMs (recipe `tilt:` sections, with CPU_SETTINGS on top), validation domain
    glf-ebm          FID every `eval_every` steps, the best step kept
    bits             Glow's bits/dim on the test set (dequantization bound, one draw of u per image)
    sample-MODEL     n samples of each model in MODELS; `glow-t07`: Glow at temperature 0.7;
                     `glow-ebm-data`: the Glow EBM's tilt sampled by Langevin in x on E(x) − log p_glow(x)
                     (paper §3.1), from Glow's own samples, at the noise sampler's number of steps
    domain-MODEL     domain FID / KID / PRDC / class KL (the first also gives the train-vs-test floor)
    inception-MODEL  Inception FID (test statistics cached)

Checks: tilted / base FID ≤ the paper's ratio on both scales (Glow 41.6 / 58.7 = 0.71, GLF 25.3 / 32.5 =
0.78) and Glow + EBM below Glow at temperature 0.7 on both scales.

    .venv/bin/python benchmarks/fashion_flows.py --n 2000               # everything
    .venv/bin/python benchmarks/fashion_flows.py --stages classifier,glf,glf-ebm,sample-glf,sample-glf-ebm
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import tiltkit  # noqa: E402
from common import (ROOT, base_val_fid, cpu_model, evaluate_samples, figure, git_commit, last_metrics,  # noqa: E402
                    recipe, run_stage, save_results, stage_cli, validation_curve, write_block)
from tiltkit import viz  # noqa: E402
from tiltkit.config import TiltRunConfig, from_dict  # noqa: E402
from tiltkit.data.images import to_uint8  # noqa: E402
from tiltkit.data.source import DataSource  # noqa: E402
from tiltkit.metrics.image_eval import Metric, classifier_for  # noqa: E402
from tiltkit.training import TILT, train_base, train_tilt  # noqa: E402

BASES = ("glow", "glf")
RECIPES = {b: ROOT / "configs" / f"fashion_{b}_latent_ebm.yaml" for b in BASES}
# On 2 CPU cores a Langevin step through Glow's 32 couplings costs ~0.36 s for 64 chains (BENCHMARKS.md,
# flow-speed), so the recipe's 200 × 60 training steps alone would take ~70 min: the Glow EBM is trained
# and sampled with 20-step chains instead, at ε = 0.03 so that a chain covers the paper's Langevin time
# (60 × 0.01; at 20 × 0.01 the chains hardly moved), and validated on 500 samples.
CPU_SETTINGS = {
    "glow": {"train_sampler": {"kind": "langevin", "steps": 20, "step_size": 0.03},
             "sample_sampler": {"kind": "langevin", "steps": 20, "step_size": 0.03}, "eval_n": 500},
    "glf": {},
}
TEMPERATURE = 0.7
DATA_SPACE_STEP = 1e-5  # Langevin ε in x ∈ [0, 1]^D for the exact tilt (−log p_glow is very steep there)
MODELS = {  # key: label
    "glow": "Glow",
    "glow-t07": f"Glow, temperature {TEMPERATURE}",
    "glow-ebm": "Glow + latent EBM",
    "glow-ebm-data": "Glow + EBM, chains in x (exact tilt)",
    "glf": "GLF",
    "glf-ebm": "GLF + latent EBM",
}
PAPER = {"glow": 58.7, "glow-ebm": 41.6, "glf": 32.5, "glf-ebm": 25.3}  # tilting paper, Table 1, Fashion-MNIST
EBMS = tuple(f"{b}-ebm" for b in BASES)
PAIRS = tuple(zip(BASES, EBMS))
STAGES = ("classifier", *BASES, *EBMS, "bits") + tuple(
    f"{s}-{m}" for s in ("sample", "domain", "inception") for m in MODELS)


def ebm_config(base: str, base_run: Path) -> TiltRunConfig:
    """The recipe's `tilt:` section for `base`, with this benchmark's CPU_SETTINGS on top."""
    _, values = recipe(RECIPES[base])
    return from_dict(TiltRunConfig, {**values, **CPU_SETTINGS[base], "base": str(base_run)}, str(RECIPES[base]))


def main() -> None:
    args, stages, results = stage_cli(__doc__, STAGES, ROOT / "runs" / "bench-flows", "fashion_mnist_flows.json")
    out = args.out
    base_cfgs = {b: recipe(RECIPES[b])[0] for b in BASES}
    source = DataSource.of(base_cfgs["glow"])
    n = min(args.n, len(source.images("train").x))
    results.update({"source": source.images("train").source, "cpu": cpu_model(),
                    "torch": torch.__version__, "recipes": [str(r.relative_to(ROOT)) for r in RECIPES.values()],
                    "cpu_settings": CPU_SETTINGS, "data_space_step": DATA_SPACE_STEP})
    results.setdefault("threads", {})

    if any(s.startswith("sample") for s in stages) or "n" not in results:  # n: that of the samples evaluated
        results["n"] = n
    for stage in stages:
        if stage not in results["stages"]:  # the thread count of the run that computes it
            results["threads"][stage] = args.threads
        if stage == "classifier":
            run_stage(stage, results, lambda: (classifier_for(source, quiet=False),
                                               {"checksum": source.images("train").checksum()})[1])
        elif stage in BASES:
            def base(stage=stage):
                run = out / stage
                train_base(base_cfgs[stage], run, resume=(run / "config.yaml").exists())
                return {"steps": base_cfgs[stage].steps, "train_seconds": last_metrics(run)["time_s"]}
            run_stage(stage, results, base)
        elif stage in EBMS:
            run_stage(stage, results, lambda stage=stage: train_energy(stage, out, source))
        elif stage == "bits":
            run_stage(stage, results, lambda: test_bits(out / "glow", source))
        else:
            what, key = stage.split("-", 1)
            run_stage(stage, results, lambda what=what, key=key: STAGE_FNS[what](key, out, n, source, results))
    finish(results)


def train_energy(stage: str, out: Path, source: DataSource) -> dict:
    base = stage.removesuffix("-ebm")
    cfg, run = ebm_config(base, out / base), out / stage
    train_tilt(cfg, run, resume=(run / "config.yaml").exists())
    points = validation_curve(run)
    best = min(points, key=lambda q: q["val_fid"])
    last = last_metrics(run)
    return {"curve": points, "best_step": best["step"], "steps_run": last["step"],
            "base_val_fid": base_val_fid(cfg, source), "train_seconds": last["time_s"]}


@torch.no_grad()
def test_bits(run: Path, source: DataSource, batch: int = 500) -> dict:
    """Mean bits/dim of the trained Glow over the whole test set."""
    glow = tiltkit.load(run, device="cpu").model
    x = source.tensor("test", None, glow.pixel_range)
    gen = torch.Generator().manual_seed(0)
    bits = torch.cat([glow.bits_per_dim(x[i:i + batch], gen) for i in range(0, len(x), batch)])
    return {"test_bits_per_dim": round(bits.mean().item(), 4), "test_n": len(x)}


def sample(key: str, out: Path, n: int, source: DataSource, results: dict) -> dict:
    run = tiltkit.load(out / key.removesuffix("-t07").removesuffix("-data"), device="cpu")
    gen = torch.Generator().manual_seed(1)
    noise = run.model.sample_noise(n, gen, TEMPERATURE) if key == "glow-t07" else None
    if key == "glow-ebm-data":  # the tilt's chains in x on the Glow in data space, at DATA_SPACE_STEP
        run = run.with_sampling(step_size=DATA_SPACE_STEP, data_space=True)
    t0 = time.perf_counter()
    x = run.sample(n, generator=gen, noise=noise, chunk=500, quiet=False)
    seconds = time.perf_counter() - t0
    info = {"sample_seconds": round(seconds, 1),
            "nonfinite_fraction": (~torch.isfinite(x.flatten(1))).any(1).float().mean().item()}
    np.savez_compressed(out / f"samples_{key}.npz", x=to_uint8(x, run.base.pixel_range).numpy())
    if run.method is TILT:
        info["sampler"] = {k: getattr(v, "value", v) for k, v in dataclasses.asdict(run.cfg.sample_sampler).items()}
    if key in EBMS:
        picture(run, ROOT / "docs" / f"fashion_mnist_{key.replace('-', '_')}.png", MODELS[key])
    return info


def picture(run: tiltkit.Run, path: Path, label: str) -> None:
    """64 base samples and the tilted samples started from the same noise, side by side."""
    gen = torch.Generator().manual_seed(7)
    noise = run.model.sample_noise(64, gen)
    with torch.no_grad():
        base = to_uint8(run.base.decode(noise), run.base.pixel_range).cpu()
    tilted = run.images(64, generator=gen, noise=noise)
    viz.compare_figure([(label.split(" +")[0], base), (label, tilted)], path, nrow=8)


STAGE_FNS = {"sample": sample, "domain": evaluate_samples([Metric.FID, Metric.KID, Metric.PRDC, Metric.CLASSES]),
             "inception": evaluate_samples([Metric.INCEPTION_FID])}


def finish(results: dict) -> None:
    checks, results["ratios"] = {}, {}
    for base, tilted in PAIRS:
        target = round(PAPER[tilted] / PAPER[base], 2)
        for metric in ("fid", "inception_fid"):
            b, t = figure(results, base, metric), figure(results, tilted, metric)
            ratio = t / b if b and t is not None else None
            results["ratios"][f"{tilted} {metric}"] = ratio and round(ratio, 4)
            checks[f"{tilted} / {base} {metric} <= {target}"] = None if ratio is None else ratio <= target
    for metric in ("fid", "inception_fid"):
        t, cold = figure(results, "glow-ebm", metric), figure(results, "glow-t07", metric)
        checks[f"glow-ebm {metric} < glow-t07's"] = None if t is None or cold is None else t < cold
    results.update({"checks": checks, "date": datetime.date.today().isoformat(), "commit": git_commit()})
    plot_curves(results, ROOT / "docs" / "fashion_mnist_flows_time_to_quality.png")
    save_results(results)
    write_block("fashion-flows", section(results), "Fashion-MNIST: Glow and GLF, tilted by latent EBMs "
                "(`benchmarks/fashion_flows.py`)")
    print(json.dumps({k: v for k, v in results.items() if k not in ("stages", "path")}, indent=1))


def plot_curves(results: dict, path: Path) -> None:
    """Validation domain FID against EBM step for both bases (step 0: the base itself)."""
    runs = [(k, results["stages"][k]) for k in EBMS if k in results["stages"]]
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, st in runs:
        steps = [0] + [q["step"] for q in st["curve"]]
        ax.plot(steps, [st["base_val_fid"]] + [q["val_fid"] for q in st["curve"]], "o-", label=MODELS[key])
    ax.set(xlabel="EBM training step", ylabel="validation domain FID", yscale="log",
           title="Fashion-MNIST: flows tilted by latent EBMs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section(r: dict) -> str:
    st = r["stages"]
    fmt = lambda v, f=".2f": "–" if v is None else format(v, f)  # noqa: E731
    rows = ["| model | Inception FID | paper (Inception FID) | domain FID | KID | precision | recall | coverage | "
            "class KL | non-finite | sampling s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor = next((s["floor"] for k, s in st.items() if k.startswith("domain-") and "floor" in s), None)
    if floor:
        rows.append(f"| real: {r['n']} train vs test images (floor) | – | | {floor['fid']:.2f} | {floor['kid']:.4f} | "
                    f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['coverage']:.3f} | "
                    f"{floor['class_kl']:.4f} | | |")
    for key, label in MODELS.items():
        d = st.get(f"domain-{key}", {}).get("model", {})
        s = st.get(f"sample-{key}", {})
        rows.append(f"| {label} | {fmt(figure(r, key, 'inception_fid'))} | {PAPER.get(key, '')} | {fmt(d.get('fid'))} | "
                    f"{fmt(d.get('kid'), '.4f')} | {fmt(d.get('precision'), '.3f')} | {fmt(d.get('recall'), '.3f')} | "
                    f"{fmt(d.get('coverage'), '.3f')} | {fmt(d.get('class_kl'), '.4f')} | "
                    f"{fmt(s.get('nonfinite_fraction'), '.1%')} | {fmt(s.get('sample_seconds'), '.0f')} |")
    ebms = " · ".join(f"{k}: best step {st[k]['best_step']} of {st[k]['steps_run']} (base's own validation "
                      f"FID {st[k]['base_val_fid']:.2f})" for k in EBMS if k in st)
    bits = (f"Glow bits/dim on the {st['bits']['test_n']} test images: **{st['bits']['test_bits_per_dim']:.3f}** "
            f"(after {st['glow']['steps']} steps). ") if "bits" in st and "glow" in st else ""
    times = " · ".join(f"{k} {v.get('train_seconds', v['seconds']) / 60:.1f} min ({r['threads'].get(k, '?')} thr.)"
                       for k, v in st.items())
    ratios = "; ".join(f"{k} {v if v is not None else '–'}" for k, v in r["ratios"].items())
    checks = "; ".join(f"{k}: {'met' if ok else 'NOT met' if ok is False else 'not yet run'}"
                       for k, ok in r["checks"].items())
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, torch {r['torch']}. Data: {r['source']}; recipes "
            f"{', '.join(f'`{x}`' for x in r['recipes'])} (Glow EBM on CPU: 20-step chains, see the script's "
            f"CPU_SETTINGS); {r['n']} samples per model against the test set. {bits}Energy trainings "
            f"(validation domain FID every `eval_every` steps, the best kept): {ebms}.\n\n" + "\n".join(rows) +
            f"\n\nRatios tilted / base: {ratios} (paper: Glow 0.71, GLF 0.78)."
            f"\n\nStage times (training stages: the run's own clock): {times}.\n\nTargets: {checks}.\n")


if __name__ == "__main__":
    main()
