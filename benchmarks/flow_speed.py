"""Seconds per step of the flow bases (issue: Glow and GLF) on each device at hand, to size their recipes.

Per device (the CPU with --threads threads; CUDA when present) and model (Glow and GLF at the Fashion-MNIST
recipes' sizes, configs/fashion_{glow,glf}_latent_ebm.yaml): a base training step (loss, backward, Adam) at
the recipe's batch, and one Langevin step of the tilted model (conv-small energy, batch 64) over the
flow's noise and, for Glow, in data space (U(x) = −log p_flow(x) + E(x)). Median of --repeat timed
calls after --warmup untimed ones; CUDA timings synchronize. Ratios are against the CPU in the same run.

    .venv/bin/python benchmarks/flow_speed.py                 # here: the CPU only
    python3 benchmarks/flow_speed.py --out $OUT/flow_speed.json   # on a GPU machine (PYTHONPATH=src)
    .venv/bin/python benchmarks/flow_speed.py --rewrite FILE.json   # its results into benchmarks/results, BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import torch

from common import ROOT, cpu_model, git_commit, recipe, write_block
from tiltkit.energies import SmallConvEnergy
from tiltkit.generators import FlowInDataSpace
from tiltkit.samplers import SamplerConfig, SamplerKind
from tiltkit.tilt import TiltedModel
from tiltkit.training.builders import build_base

SHAPE = (1, 28, 28)
RECIPES = {"glow": ROOT / "configs" / "fashion_glow_latent_ebm.yaml", "glf": ROOT / "configs" / "fashion_glf_latent_ebm.yaml"}
LANGEVIN = SamplerConfig(SamplerKind.LANGEVIN, steps=1, step_size=1e-4)


def timed(fn, device: torch.device, warmup: int, repeat: int) -> float:
    """Median seconds of fn() over `repeat` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, device: torch.device, warmup: int, repeat: int) -> dict:
    cfg, _ = recipe(RECIPES[name])
    model = build_base(cfg, SHAPE).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randint(0, 256, (cfg.batch_size, *SHAPE), generator=gen, device=device).float() / 255

    def train_step():
        out = model.loss(x, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    out = {"batch": cfg.batch_size, "parameters": sum(p.numel() for p in model.parameters()),
           "train_step_s": timed(train_step, device, warmup, repeat)}
    model.eval().requires_grad_(False)
    torch.manual_seed(0)
    energy = SmallConvEnergy(SHAPE, width=32).to(device)
    spaces = {"noise": TiltedModel(model, energy)}
    if hasattr(model, "log_density"):
        spaces["data"] = TiltedModel(FlowInDataSpace(model), energy)
    for space, tilted in spaces.items():
        start = tilted.sample_noise(64, gen)
        out[f"langevin_step_{space}_s"] = timed(lambda: tilted.sample(LANGEVIN, start, gen), device, warmup, repeat)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/flow_speed.json)")
    p.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--rewrite", type=Path, metavar="FILE", help="measure nothing: take FILE's results (e.g. from a "
                   "GPU machine) as benchmarks/results/flow_speed.json and write the section")
    args = p.parse_args()
    heading = "Flow bases: seconds per step (`benchmarks/flow_speed.py`)"
    if args.rewrite:
        results = json.loads(args.rewrite.read_text())
        (ROOT / "benchmarks" / "results" / "flow_speed.json").write_text(json.dumps(results, indent=1) + "\n")
        write_block("flow-speed", section(results), heading, args.markdown)
        return
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = {"date": datetime.date.today().isoformat(), "commit": git_commit(), "cpu": cpu_model(),
               "threads": args.threads, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "models": {}}
    for name in RECIPES:
        for device in devices:
            results["models"].setdefault(name, {})[device.type] = measure(name, device, args.warmup, args.repeat)
            print(name, device.type, json.dumps(results["models"][name][device.type]), flush=True)
    path = args.out or ROOT / "benchmarks" / "results" / "flow_speed.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    if args.out is None:
        write_block("flow-speed", section(results), heading, args.markdown)
    print(f"wrote {path}")


def section(r: dict) -> str:
    rows = ["| model | device | batch | train step (s) | Langevin step, noise space (s) | Langevin step, data space (s) |"
            " ×CPU (train) |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, per in r["models"].items():
        for dev, m in per.items():
            data = m.get("langevin_step_data_s")
            speedup = per["cpu"]["train_step_s"] / m["train_step_s"]
            rows.append(f"| {name} ({m['parameters'] / 1e3:.0f}k) | {dev} | {m['batch']} | {m['train_step_s']:.4f} | "
                        f"{m['langevin_step_noise_s']:.4f} | {'–' if data is None else f'{data:.4f}'} | "
                        f"{speedup:.1f} |")
    gpu = f", GPU {r['gpu']}" if r["gpu"] else ""
    note = f" Note: {r['note']}." if r.get("note") else ""
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} CPU threads{gpu}, torch {r['torch']}. "
            f"Median of timed calls; Langevin steps at batch 64 with the conv-small energy.{note}\n\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
