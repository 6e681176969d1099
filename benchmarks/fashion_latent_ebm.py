"""Latent EBM on a frozen conv VAE, Fashion-MNIST (or MNIST) end to end: the tilting paper's Table 1 row.

Stages, each timed on its own (2 CPU threads) and written to the results JSON as it ends,
so an interrupted run resumes at the first unfinished stage:

    classifier  the domain classifier (trained once per data set, then cached)
    vae         the base VAE (recipe `base:` section)
    ebm         the latent EBM (recipe `tilt:` section), validation domain FID every `eval_every` steps
    sample      n samples from the VAE and n from the tilted model (best checkpoint), saved as .npz
    domain      domain FID / KID / PRDC / class KL of both against the test set, and the train-vs-test floor
    inception   Inception FID of both (test statistics cached; no train-vs-test floor, which would cost
                another 10,000 images, ~25 min on 2 cores)

Ratio checked: tilted FID / VAE FID ≤ 0.667 (the paper's 38.1 / 57.1 on Fashion-MNIST; MNIST 16.0 / 18.9).
Also writes the before/after picture (64 samples from the same noise) and the time-to-quality curve.

    .venv/bin/python benchmarks/fashion_latent_ebm.py                      # Fashion-MNIST, all stages
    .venv/bin/python benchmarks/fashion_latent_ebm.py --data mnist         # the MNIST recipe
    .venv/bin/python benchmarks/fashion_latent_ebm.py --stages classifier,vae,ebm,sample,domain
"""

from __future__ import annotations

import argparse
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
from common import (ROOT, base_val_fid, cpu_model, git_commit, recipe, run_stage, save_results,  # noqa: E402
                    validation_curve, write_block)
from tiltkit import viz  # noqa: E402
from tiltkit.config import TiltRunConfig, from_dict  # noqa: E402
from tiltkit.data.images import to_uint8  # noqa: E402
from tiltkit.data.source import DataSource  # noqa: E402
from tiltkit.metrics.image_eval import Metric, classifier_for, evaluate_images  # noqa: E402
from tiltkit.training import train_base, train_tilt  # noqa: E402

STAGES = ("classifier", "vae", "ebm", "sample", "domain", "inception")
PAPER = {"fashion-mnist": {"vae": 57.1, "tilted": 38.1}, "mnist": {"vae": 18.9, "tilted": 16.0}}
TARGET_RATIO = {"fashion-mnist": 0.667, "mnist": 0.85}


def recipe_path(data: str) -> Path:
    """configs/{fashion,mnist}_vae_latent_ebm.yaml for the data set."""
    return ROOT / "configs" / f"{data.split('-')[0]}_vae_latent_ebm.yaml"


def plot_curve(points: list[dict], vae_fid: float | None, path: Path, data: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot([p["step"] for p in points], [p["val_fid"] for p in points], "o-", label="VAE + latent EBM")
    if vae_fid is not None:
        ax.axhline(vae_fid, color="gray", ls="--", label="VAE (step 0)")
    ax.set(xlabel="EBM training step", ylabel="domain FID (validation, 1,000 samples)", title=f"{data}: time to quality")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist", choices=sorted(PAPER))
    p.add_argument("--out", type=Path, help="work folder (default runs/bench-DATA)")
    p.add_argument("--n", type=int, default=10_000, help="samples per model (capped by the training set size)")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--fresh", action="store_true", help="forget earlier results of this benchmark")
    args = p.parse_args()
    torch.set_num_threads(2)
    stages = [s for s in args.stages.split(",") if s]
    out = args.out or ROOT / "runs" / f"bench-{args.data}"
    out.mkdir(parents=True, exist_ok=True)
    (ROOT / "docs").mkdir(exist_ok=True)
    slug = args.data.replace("-", "_")
    res_path = ROOT / "benchmarks" / "results" / f"{slug}_latent_ebm.json"
    results = json.loads(res_path.read_text()) if res_path.exists() and not args.fresh else {}
    results.setdefault("stages", {})
    recipe_file = recipe_path(args.data)
    base_cfg, tilt_values = recipe(recipe_file)
    source = DataSource.of(base_cfg)
    n = min(args.n, len(source.images("train").x))
    results.update({"path": str(res_path), "data": args.data, "source": source.images("train").source,
                    "recipe": str(recipe_file.relative_to(ROOT)), "n": n, "cpu": cpu_model(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__})
    vae_dir, tilt_dir = out / "vae", out / "tilt"
    samples = out / "samples.npz"

    if "classifier" in stages:
        def classifier():
            classifier_for(source, quiet=False)
            return {"checksum": source.images("train").checksum()}
        run_stage("classifier", results, classifier)
    if "vae" in stages:
        def vae():
            train_base(base_cfg, vae_dir, resume=(vae_dir / "config.yaml").exists())
            return {"steps": base_cfg.steps}
        run_stage("vae", results, vae)
    if "ebm" in stages:
        tilt_cfg = from_dict(TiltRunConfig, {**tilt_values, "base": str(vae_dir)}, str(recipe_file))

        def ebm():
            train_tilt(tilt_cfg, tilt_dir, resume=(tilt_dir / "config.yaml").exists())
            points = validation_curve(tilt_dir)
            best = min(points, key=lambda q: q["val_fid"])
            steps_run = json.loads((tilt_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
            return {"curve": points, "best_step": best["step"], "steps_run": steps_run,
                    "vae_val_fid": base_val_fid(tilt_cfg, source)}
        run_stage("ebm", results, ebm)
    if "sample" in stages:
        def sample():
            times = {}
            xs = {}
            for key, run in (("vae", vae_dir), ("tilted", tilt_dir)):
                t0 = time.perf_counter()
                xs[key] = tiltkit.load(run, device="cpu").images(n, generator=torch.Generator().manual_seed(1),
                                                                 quiet=False)
                times[f"{key}_seconds"] = round(time.perf_counter() - t0, 1)
            np.savez_compressed(samples, **{k: v.numpy() for k, v in xs.items()})
            picture(tilt_dir, ROOT / "docs" / f"{slug}_vae_vs_tilted.png")
            return times
        run_stage("sample", results, sample)
    loaded = np.load(samples) if samples.exists() else None
    for stage, metrics in (("domain", [Metric.FID, Metric.KID, Metric.PRDC, Metric.CLASSES]),
                           ("inception", [Metric.INCEPTION_FID])):
        if stage in stages:
            def evaluate(metrics=metrics, floor=stage == "domain"):
                report = {}
                for i, key in enumerate(("vae", "tilted")):
                    r = evaluate_images(torch.from_numpy(loaded[key]), source, metrics, quiet=False,
                                        floor=floor and i == 0)
                    report[key] = r["model"]
                    if "floor" in r:
                        report["floor"] = r["floor"]
                    if "classifier_test_accuracy" in r:
                        report["classifier_test_accuracy"] = r["classifier_test_accuracy"]
                return report
            run_stage(stage, results, evaluate)
    finish(results, out, slug, bool(stages))


def picture(tilt_dir: Path, path: Path) -> None:
    """64 VAE samples and the tilted samples started from the same noise, side by side."""
    run = tiltkit.load(tilt_dir, device="cpu")
    gen = torch.Generator().manual_seed(7)
    noise = run.model.sample_noise(64, gen)
    with torch.no_grad():
        base = to_uint8(run.base.decode(noise), run.base.pixel_range).cpu()
    tilted = run.images(64, generator=gen, noise=noise)
    viz.compare_figure([("VAE", base), ("VAE + latent EBM", tilted)], path, nrow=8)


def finish(results: dict, out: Path, slug: str, ran_stages: bool) -> None:
    st = results["stages"]
    data = results["data"]
    checks = {}
    for stage, key in (("domain", "fid"), ("inception", "inception_fid")):
        check = f"{key} ratio <= {TARGET_RATIO[data]}"
        checks[check] = None  # not yet run
        if stage in st:
            ratio = st[stage]["tilted"][key] / st[stage]["vae"][key]
            results[f"{key}_ratio"] = round(ratio, 4)
            checks[check] = ratio <= TARGET_RATIO[data]
    core = [s for s in ("classifier", "vae", "ebm", "sample", "domain") if s in st]
    results["core_minutes"] = round(sum(st[s]["seconds"] for s in core) / 60, 1)
    results["total_minutes"] = round(sum(v["seconds"] for v in st.values()) / 60, 1)
    if all(s in st for s in ("classifier", "vae", "ebm")):  # when the kept (best) energy existed
        at_best = next(q["seconds"] for q in st["ebm"]["curve"] if q["step"] == st["ebm"]["best_step"])
        minutes = (st["classifier"]["seconds"] + st["vae"]["seconds"] + at_best) / 60
        results["minutes_to_final_model"] = round(minutes, 1)
    checks["core stages < 60 min"] = results["core_minutes"] < 60 if len(core) == 5 else None
    results["checks"] = checks
    if ran_stages:  # `--stages ""` only re-renders, keeping the stamp of the run that made the numbers
        results.update({"date": datetime.date.today().isoformat(), "commit": git_commit()})
    if "ebm" in st:
        plot_curve(st["ebm"]["curve"], st["ebm"]["vae_val_fid"], ROOT / "docs" / f"{slug}_time_to_quality.png", data)
    save_results(results)
    title = "Fashion-MNIST" if data == "fashion-mnist" else "MNIST"
    write_block(slug, section(results), f"{title}: VAE vs VAE + latent EBM (`benchmarks/fashion_latent_ebm.py`)")
    print(json.dumps({k: v for k, v in results.items() if k not in ("stages", "path")}, indent=1))


def section(r: dict) -> str:
    """The BENCHMARKS.md block: the FID table with the paper's numbers beside ours, then the stage times."""
    st, data = r["stages"], r["data"]
    dom, inc = st.get("domain", {}), st.get("inception", {})
    fmt = lambda d, k, f=".2f": format(d[k], f) if k in d else "–"  # noqa: E731
    rows = ["| model | Inception FID | paper (Inception FID) | domain FID | KID | precision | recall | density | "
            "coverage | class KL |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("floor", f"real: {r['n']} train vs test images (floor)"), ("vae", "VAE"),
                       ("tilted", "VAE + latent EBM")):
        d, i = dom.get(key, {}), inc.get(key, {})
        paper = PAPER[data].get(key, "–")
        rows.append(f"| {label} | {fmt(i, 'inception_fid')} | {paper} | {fmt(d, 'fid')} | {fmt(d, 'kid', '.4f')} | "
                    f"{fmt(d, 'precision', '.3f')} | {fmt(d, 'recall', '.3f')} | {fmt(d, 'density', '.3f')} | "
                    f"{fmt(d, 'coverage', '.3f')} | {fmt(d, 'class_kl', '.4f')} |")
    paper_ratio = PAPER[data]["tilted"] / PAPER[data]["vae"]
    rows.append(f"| ratio tilted / VAE | {r.get('inception_fid_ratio', '–')} | {paper_ratio:.3f} | "
                f"{r.get('fid_ratio', '–')} | | | | | | |")
    times = " · ".join(f"{name} {st[name]['seconds'] / 60:.1f} min" for name in STAGES if name in st)
    checks = "; ".join(f"{k}: {'met' if ok else 'NOT met' if ok is False else 'not yet run'}"
                       for k, ok in r["checks"].items())
    ebm = st.get("ebm", {})
    best = (f" Early stopping kept step {ebm['best_step']} of {ebm['steps_run']} (validation domain FID, "
            f"{ebm['curve'][0]['step']}-step grid; the VAE's own: {ebm['vae_val_fid']:.2f}).") if ebm else ""
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} threads, torch {r['torch']}. "
            f"Data: {r['source']}; recipe `{r['recipe']}`; {r['n']} samples per model against the test set "
            f"(Inception FID: standard FID Inception-v3 weights; domain metrics: features of the project's "
            f"classifier, test accuracy {dom.get('classifier_test_accuracy', float('nan')):.4f}).{best}\n\n" + "\n".join(rows) + "\n\n"
            f"Stage wall times: {times}; classifier + VAE + EBM + sampling + domain metrics = "
            f"{r['core_minutes']} min; **all stages {r['total_minutes']} min**. Time to the final model (classifier, "
            f"VAE, and the EBM's own clock at its kept step, whose domain FID is the table's): "
            f"{r.get('minutes_to_final_model', '–')} min; its domain FID is known once sampling and the domain "
            f"metrics are done, at {r['core_minutes']} min.\n\nTargets: {checks}.\n\n")


if __name__ == "__main__":
    main()
