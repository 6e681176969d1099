"""The wall time of `reproduce.py --scale paper` on a device, estimated from measured step times.

    python benchmarks/reproduce_estimate.py --device cuda [--data fashion-mnist] [--steps 400]

Runs every stage of the paper-scale run on one data set, shortened, with the full run's options (bf16, and
the compile decision the full step count would make):
    classifier        trained as in the full run (cached per data set)
    BASE              `--steps` training steps; BASE+ebm: `--ebm-steps` steps of its latent EBM
    BASE:sample       `--chunk` samples of the base and of the tilt, the full run's chunk size
    BASE:fid          domain FID and Inception features of n images per model (the chunk repeated)
and extrapolates: a training stage's estimate is its measured wall time plus the mean step time (after the
first fifth of the steps) × the steps it did not run; sampling scales by n / chunk (n = 10,000). MNIST's networks, step
counts and sample counts equal Fashion-MNIST's, so the whole run's estimate counts each measured stage once
per data set of reproduce.py. Inception: the FID network when its weights are installed; otherwise torchvision's
Inception-v3 with random weights, the same architecture at the same cost, whose FIDs are meaningless (not kept).
Writes benchmarks/results/reproduce_paper_estimate.json and the `reproduce-paper-estimate` section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

import tiltkit
from common import ROOT, cpu_model, git_commit, mean_step_seconds, write_block
from reproduce import BASES, EBM_STEPS, PAPER_DATA, Scale, base_options, tilt_options
from tiltkit.config import BaseRunConfig, TiltRunConfig, from_dict
from tiltkit.data.source import DataSource
from tiltkit.errors import UserError
from tiltkit.metrics.features import InceptionFeatures, extract_features
from tiltkit.metrics.image_eval import INCEPTION_BATCH, Metric, classifier_for, evaluate_images
from tiltkit.training import train_base, train_tilt
from tiltkit.training.contrastive import use_compile

def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def train_estimate(train, cfg, run: Path, full_steps: int) -> dict:
    """Train cfg (its shortened steps) into run; its wall time, mean step and the full-length estimate."""
    wall = timed(lambda: train(cfg, run, quiet=True))
    step = mean_step_seconds(run)
    return {"steps_run": cfg.steps, "wall_s": round(wall, 2), "step_s": round(step, 5), "full_steps": full_steps,
            "estimate_s": round(wall + step * (full_steps - cfg.steps), 1)}


def inception_network(device: str):
    """(features function on uint8 images, what it is)."""
    try:
        return InceptionFeatures(device), "FID Inception-v3"
    except UserError:
        import torchvision
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
        net.fc = torch.nn.Identity()
        net = net.eval().to(device).to(memory_format=torch.channels_last)

        @torch.no_grad()
        def features(x: torch.Tensor) -> torch.Tensor:
            u = x.to(device).float().expand(-1, 3, -1, -1)
            u = torch.nn.functional.interpolate(u, size=(299, 299), mode="bilinear", align_corners=False)
            return net(((u - 128) / 128).contiguous(memory_format=torch.channels_last))
        return features, "torchvision Inception-v3, random weights (the FID network's architecture; timing only)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--steps", type=int, default=400, help="training steps of each base")
    p.add_argument("--ebm-steps", type=int, default=20)
    p.add_argument("--chunk", type=int, default=2000)
    p.add_argument("--n", type=int, default=10_000, help="samples per model in the full run")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "reproduce-estimate")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "reproduce_paper_estimate.json")
    p.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--render", action="store_true", help="only rewrite the section from the --results JSON")
    args = p.parse_args()
    if args.render:
        return render(json.loads(args.results.read_text()), args.markdown)
    source, dev, n = DataSource(args.data), args.device, args.n
    n_train = len(source.images("train").x)
    st: dict = {"classifier": {"wall_s": round(timed(lambda: classifier_for(source)), 1)}}
    features, inception_what = inception_network(dev)
    for base in BASES:
        opts = base_options(Scale.PAPER, base, args.data, n_train, dev)
        full = opts["steps"]
        cfg = from_dict(BaseRunConfig, opts | {"steps": args.steps, "checkpoint_every": args.steps}, base)
        st[base] = train_estimate(train_base, cfg, args.out / base, full)
        opts = tilt_options(Scale.PAPER, base, args.out / base, dev)
        opts["compile"] = "on" if use_compile(from_dict(TiltRunConfig, opts, base)) else "off"
        cfg = from_dict(TiltRunConfig, opts | {"steps": args.ebm_steps, "checkpoint_every": args.ebm_steps}, base)
        st[f"{base}+ebm"] = train_estimate(train_tilt, cfg, args.out / f"{base}-ebm", EBM_STEPS[base])
        st[f"{base}+ebm"]["compile"] = opts["compile"]
        xs, seconds = {}, 0.0
        for key, run in ((base, args.out / base), (f"{base}+ebm", args.out / f"{base}-ebm")):
            model = tiltkit.load(run, device=dev)
            gen = torch.Generator(dev).manual_seed(1)
            seconds += timed(lambda: xs.__setitem__(key, model.images(args.chunk, generator=gen, chunk=args.chunk)))
        st[f"{base}:sample"] = {"chunk": args.chunk, "wall_s": round(seconds, 2),
                                "estimate_s": round(seconds * n / args.chunk, 1)}
        tiled = {k: x.repeat(n // args.chunk + 1, 1, 1, 1)[:n] for k, x in xs.items()}
        domain = sum(timed(lambda x=x: evaluate_images(x, source, [Metric.FID], floor=False)) for x in tiled.values())
        inception = sum(timed(lambda x=x: extract_features(features, x, INCEPTION_BATCH)) for x in tiled.values())
        st[f"{base}:fid"] = {"domain_s": round(domain, 1), "inception_s": round(inception, 1),
                             "estimate_s": round(domain + inception, 1)}
    st["inception:test"] = {"estimate_s": round(st["vae:fid"]["inception_s"] / 2, 1)}  # the test set's n images
    per_data = sum(v.get("estimate_s", v.get("wall_s")) for v in st.values())
    r = {"date": datetime.date.today().isoformat(), "commit": git_commit(), "torch": torch.__version__,
         "device_name": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else cpu_model(),
         "data": args.data, "n": n, "inception": inception_what, "stages": st,
         "per_data_set_estimate_s": round(per_data),
         "data_sets": len(PAPER_DATA), "estimate_s": round(per_data * len(PAPER_DATA))}
    args.results.write_text(json.dumps(r, indent=1) + "\n")
    render(r, args.markdown)


def render(r: dict, markdown: Path) -> None:
    write_block("reproduce-paper-estimate", section(r), "Table 1 at paper scale: estimated wall time "
                "(`benchmarks/reproduce_estimate.py`)", markdown)
    print(section(r))


def section(r: dict) -> str:
    rows = []
    for name, v in r["stages"].items():
        measured = (f"{v['steps_run']} steps in {v['wall_s']:.1f} s, mean step {v['step_s'] * 1e3:.1f} ms"
                    if "step_s" in v else f"{v['wall_s']:.1f} s for {v['chunk']}" if "chunk" in v else
                    f"domain {v['domain_s']:.1f} s + Inception {v['inception_s']:.1f} s for 2 × {r['n']:,}"
                    if "domain_s" in v else f"{v['wall_s']:.1f} s" if "wall_s" in v else "= one model's Inception time")
        estimate = v.get("estimate_s", v.get("wall_s"))
        rows.append(f"| {name} | {measured} | {estimate / 60:.1f} |")
    return (f"{r['date']}, commit {r['commit']}, {r['device_name']}, torch {r['torch']}; data {r['data']}; "
            f"Inception: {r['inception']}. **An estimate**, from the shortened stages below, of "
            f"`python benchmarks/reproduce.py --scale paper --device cuda`: **{r['estimate_s'] / 60:.0f} min** "
            f"({r['per_data_set_estimate_s'] / 60:.1f} min per data set × {r['data_sets']}).\n\n"
            "| stage | measured | estimated full stage, min |\n|---|---|---:|\n" + "\n".join(rows)
            + "\n\nReproduce: `python benchmarks/reproduce_estimate.py --device cuda`.")


if __name__ == "__main__":
    main()
