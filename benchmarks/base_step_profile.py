"""Where the paper-scale bases' training step goes on a GPU: tiltkit's loop against a bare PyTorch step.

    python benchmarks/base_step_profile.py --device cuda [--steps 300]

For the DCGAN VAE and the GLF of `reproduce.py --scale paper` on Fashion-MNIST (bf16 autocast, batch 128):
    library     ms per step of `train_base`: its own clock over the steps after the first fifth, divided by their number
    bare        ms per step of forward + backward + Adam on the same model, no logging, checks or host reads
    compiled    the VAE's bare step with its loss under torch.compile (default mode)
    kernels     GPU kernel time and kernel count per step (torch.profiler, 20 steps)
A step whose kernel time is well under its wall time is bound by the host (launches, Python), which CUDA graphs
address; the kernel time is the floor they leave. Writes benchmarks/results/base_step_profile.json and the
profiler tables to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from common import ROOT, git_commit, mean_step_seconds
from reproduce import Scale, base_options
from tiltkit.config import BaseRunConfig, from_dict
from tiltkit.data.source import DataSource
from tiltkit.training import train_base
from tiltkit.training.builders import build_base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "base-step-profile")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "base_step_profile.json")
    args = p.parse_args()
    dev, steps, cuda = args.device, args.steps, args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    args.out.mkdir(parents=True, exist_ok=True)
    source = DataSource("fashion-mnist")
    res: dict = {"date": datetime.date.today().isoformat(), "commit": git_commit(), "torch": torch.__version__,
                 "device_name": torch.cuda.get_device_name(dev) if cuda else "cpu", "steps": steps}
    for base in ("vae", "glf"):
        opts = base_options(Scale.PAPER, base, "fashion-mnist", len(source.images("train").x), dev)
        cfg = from_dict(BaseRunConfig, opts | {"steps": steps, "checkpoint_every": steps}, base)
        train_base(cfg, args.out / base, quiet=True)
        res[f"{base}_library_ms"] = round(1e3 * mean_step_seconds(args.out / base), 3)

        model = build_base(cfg, source.images("train").shape).to(dev).train()
        x = source.tensor("train", None, model.pixel_range).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator(dev).manual_seed(0)

        def step():
            idx = torch.randint(len(x), (cfg.batch_size,), generator=gen, device=dev)
            with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
                loss = model.loss(x[idx], gen).loss
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            opt.step()

        def ms_per_step(n: int) -> float:
            for _ in range(20):
                step()
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            return round(1e3 * (time.perf_counter() - t0) / n, 3)
        res[f"{base}_bare_ms"] = ms_per_step(steps)
        if cuda:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    step()
                sync()
            table = prof.key_averages()
            res[f"{base}_kernel_ms"] = round(sum(e.self_device_time_total for e in table) / 1e3 / 20, 3)
            res[f"{base}_kernels"] = sum(e.count for e in table if e.device_type.name == "CUDA") / 20
            (args.out / f"{base}_profile.txt").write_text(table.table(sort_by="self_cpu_time_total", row_limit=30))
            if base == "vae":
                model.loss = torch.compile(model.loss)
                res["vae_compiled_ms"] = ms_per_step(steps)
        print(base, {k: v for k, v in res.items() if k.startswith(base)}, flush=True)
    args.results.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
