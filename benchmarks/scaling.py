"""Throughput of energy training at 1 and 2 processes (DDP under torchrun), fp32 against bf16.

The workload is the pixel-EBM recipe on Fashion-MNIST (configs/fashion_pixel_ebm.yaml: conv-small energy
with spectral norm, persistent chains clamped to [0, 1]) shortened to K = 20 Langevin steps per update and
a batch of 32 chains per process, run by `tiltkit train tilt` itself, so the figures include everything a
training step does (chains, CD loss, DDP gradient averaging, Adam, metrics). Per configuration, --repeat
fresh runs of --steps steps; the first --warmup steps are not timed (wall times come from the run's
metrics.jsonl, so interpreter start-up and data loading are left out). Reported, median over repeats:

    training images / s     = (timed steps) · 32 · processes / seconds
    Langevin steps / s      = training images / s · K       (one step of one chain)
    scaling efficiency      = throughput(N cores) / (N · throughput(1 process × 1 thread)), same precision

Configurations on the CPU: 1 process × 1 thread, 2 processes × 1 thread (gloo), and 1 process × 2 threads
(the same two cores used by intra-op threads instead), each at precision 32 and bf16. On a CUDA machine
(--gpu) 1 process on the GPU at 32, bf16 and fp16.

    .venv/bin/python benchmarks/scaling.py                  # here: the CPU rows, results JSON + BENCHMARKS.md
    python3 benchmarks/scaling.py --gpu --out $OUT/scaling_gpu.json     # on a GPU machine (PYTHONPATH=src)
    .venv/bin/python benchmarks/scaling.py --table          # the table again, with results/scaling_gpu.json if there
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from common import ROOT, cpu_model, git_commit, write_block

BATCH, K = 32, 20
HEADING = "Scaling: processes and precision (`benchmarks/scaling.py`)"


def options(device: str, precision: str, steps: int) -> dict:
    """The tilt options of the workload: the pixel-EBM recipe, shortened."""
    tilt = yaml.safe_load((ROOT / "configs" / "fashion_pixel_ebm.yaml").read_text())["tilt"]
    tilt.update(steps=steps, batch_size=BATCH, buffer_size=1000, eval_every=0, checkpoint_every=10 ** 6,
                device=device, precision=precision)
    tilt["train_sampler"]["steps"] = K
    return tilt


def measure(nproc: int, threads: int, device: str, precision: str, steps: int, warmup: int, work: Path) -> float:
    """Training images per second of one fresh run."""
    run = work / f"run-{nproc}x{threads}-{device}-{precision}"
    shutil.rmtree(run, ignore_errors=True)
    config = work / "options.yaml"
    config.write_text(yaml.safe_dump({"tilt": options(device, precision, steps)}))
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, *launcher, "-m", "tiltkit", "train", "tilt", "--config", str(config),
                           "--out", str(run), "--quiet"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run {run.name} failed:\n{done.stderr[-3000:]}")
    times = {r["step"]: r["time_s"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "time_s" in r}
    return (steps - warmup) * BATCH * nproc / (times[steps] - times[warmup])


def configurations(gpu: bool) -> list[dict]:
    if gpu:
        return [{"nproc": 1, "threads": 1, "device": "cuda", "precision": p} for p in ("32", "bf16", "fp16")]
    return [{"nproc": n, "threads": t, "device": "cpu", "precision": p}
            for p in ("32", "bf16") for n, t in ((1, 1), (2, 1), (1, 2))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--gpu", action="store_true", help="the GPU rows instead of the CPU ones")
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/scaling[_gpu].json)")
    p.add_argument("--table", action="store_true", help="measure nothing: rewrite the BENCHMARKS.md table from "
                   "the results files present (e.g. after copying a GPU machine's scaling_gpu.json there)")
    args = p.parse_args()
    if args.table:
        write_block("scaling", section(), HEADING)
        return
    results = {"date": datetime.date.today().isoformat(), "commit": git_commit(), "torch": torch.__version__,
               "hardware": torch.cuda.get_device_name() if args.gpu else f"{cpu_model()}, {os.cpu_count()} cores",
               "workload": {"recipe": "configs/fashion_pixel_ebm.yaml", "batch_per_process": BATCH,
                            "langevin_steps": K, "steps": args.steps, "warmup": args.warmup,
                            "repeat": args.repeat}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="tiltkit-scaling-") as work:
        for c in configurations(args.gpu):
            runs = [measure(**c, steps=args.steps, warmup=args.warmup, work=Path(work)) for _ in range(args.repeat)]
            row = {**c, "images_per_s": statistics.median(runs), "runs": [round(r, 2) for r in runs]}
            row["langevin_steps_per_s"] = row["images_per_s"] * K
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    for row in results["rows"]:  # CPU: against 1 process × 1 thread at the same precision, N = cores used
        one = next(r for r in results["rows"] if (r["nproc"], r["threads"]) == (1, 1)
                   and (r["precision"], r["device"]) == (row["precision"], row["device"]))
        cores = row["nproc"] * row["threads"]
        row["efficiency"] = row["images_per_s"] / (cores * one["images_per_s"]) if row["device"] == "cpu" else None
    path = args.out or ROOT / "benchmarks" / "results" / f"scaling{'_gpu' if args.gpu else ''}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    if args.out is None:
        write_block("scaling", section(), HEADING)
    print(f"wrote {path}")


def section() -> str:
    """The BENCHMARKS.md table from every scaling results file present (CPU, and GPU once measured)."""
    rows = ["| hardware | processes × threads | precision | training images/s | Langevin steps/s | "
            "scaling efficiency |", "|---|---|---|---:|---:|---:|"]
    notes = []
    for name in ("scaling.json", "scaling_gpu.json"):
        path = ROOT / "benchmarks" / "results" / name
        if not path.exists():
            notes.append("GPU: not measured yet (no GPU machine was lent to the task that wrote this benchmark).")
            continue
        r = json.loads(path.read_text())
        for row in r["rows"]:
            where = f"{row['nproc']} × {row['threads']}" if row["device"] == "cpu" else f"{row['nproc']} GPU"
            eff = "–" if row["efficiency"] is None else f"{row['efficiency']:.2f}"
            rows.append(f"| {r['hardware']} | {where} | {row['precision']} | {row['images_per_s']:.1f} | "
                        f"{row['langevin_steps_per_s']:.0f} | {eff} |")
        w = r["workload"]
        notes.append(f"{name}: {r['date']}, commit {r['commit']}, torch {r['torch']}; {w['recipe']} with "
                     f"{w['langevin_steps']} Langevin steps and {w['batch_per_process']} chains per process, "
                     f"median of {w['repeat']} runs of {w['steps']} steps ({w['warmup']} untimed).")
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


if __name__ == "__main__":
    main()
