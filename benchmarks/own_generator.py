"""Tilt your own generator, measured: examples/tilt_own_2d_generator.py through the Python API and through the
command line (`--base-module`), each from a fresh process, on 8 Gaussians on a circle.

    .venv/bin/python benchmarks/own_generator.py [--out runs/bench-own] [--threads 2]     # ~3 min on 2 cores

1. the example script: a plain-torch VAE (2,000 steps), its decoder tilted by fit_tilt (300 steps), MMD² of
   2,000 samples of each to 2,000 held-out points;
2. `--reload` in a new process: tiltkit.load(run, base=decoder) gives the same samples for the same seed;
3. the same decoder through `tiltkit train tilt --base-module tilt_own_2d_generator:make_generator` with the
   same options, then `tiltkit sample` twice (two processes), MMD² to the same held-out points.
Writes benchmarks/results/own_generator.json, docs/own_2d_generator.png and the BENCHMARKS.md block.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from common import ROOT, cpu_model, git_commit, write_block  # noqa: E402
from tilt_own_2d_generator import eight_gaussians, mlp, mmd2  # noqa: E402

EXAMPLE = ROOT / "examples" / "tilt_own_2d_generator.py"
N = 2000


def run(cmd: list[str], env: dict) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-own")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    api, cli = args.out / "api", args.out / "cli"

    text, api_s = run([sys.executable, str(EXAMPLE), "--out", str(api), "--samples", str(N)], env)
    before, after = (float(v) for v in re.search(r"generator ([\d.]+), tilted ([\d.]+)", text).groups())
    text, _ = run([sys.executable, str(EXAMPLE), "--out", str(api), "--samples", str(N), "--reload"], env)
    reload_same = "samples identical: True" in text

    data_gen = torch.Generator().manual_seed(0)  # the example's data: the same draws
    x_train, x_test = eight_gaussians(20_000, data_gen), eight_gaussians(N, data_gen)
    np.save(args.out / "train.npy", x_train.numpy())
    cli_env = {**env, "PYTHONPATH": str(ROOT / "examples"), "OWN_2D_DECODER": str(api / "decoder.pt")}
    tiltkit = [sys.executable, "-m", "tiltkit"]
    _, cli_s = run([*tiltkit, "train", "tilt", "--base-module", "tilt_own_2d_generator:make_generator", "--data",
                    str(args.out / "train.npy"), "--out", str(cli), "--steps", "300", "--seed", "0", "--quiet",
                    "--set", "batch_size=256"], cli_env)
    for name in ("a", "b"):
        run([*tiltkit, "sample", str(cli), "--n", str(N), "--seed", "0", "--out", str(args.out / f"cli_{name}.npy")],
            cli_env)
    x_cli = torch.from_numpy(np.load(args.out / "cli_a.npy"))
    cli_same = bool(np.array_equal(np.load(args.out / "cli_a.npy"), np.load(args.out / "cli_b.npy")))
    after_cli = mmd2(x_cli, x_test)
    x_api = torch.load(api / "samples.pt")
    same_as_api = bool(torch.equal(x_api, x_cli))

    decoder = mlp(2, 2)
    decoder.load_state_dict(torch.load(api / "decoder.pt", weights_only=True))
    with torch.no_grad():
        x_gen = decoder(torch.randn(N, 2, generator=torch.Generator().manual_seed(1)))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharex=True, sharey=True)
    for ax, (title, x) in zip(axes, [("held-out data", x_test), (f"your generator (MMD² {before:.4f})", x_gen),
                                     (f"tilted by tiltkit (MMD² {after:.4f})", x_api)]):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
    fig.suptitle("A plain-torch VAE decoder on 8 Gaussians, tilted with as_base + fit_tilt (2,000 samples each)")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "own_2d_generator.png", dpi=110)

    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": args.threads, "commit": git_commit(),
              "n": N, "mmd2_generator": before, "mmd2_tilted_api": after, "ratio_api": after / before,
              "reload_in_new_process_identical": reload_same, "mmd2_tilted_cli": after_cli,
              "ratio_cli": after_cli / before, "cli_two_samplings_identical": cli_same,
              "cli_samples_equal_api_samples": same_as_api, "seconds_api_script": round(api_s, 1),
              "seconds_cli_train": round(cli_s, 1)}
    (ROOT / "benchmarks" / "results" / "own_generator.json").write_text(json.dumps(result, indent=1) + "\n")
    table = (f"{result['date']}, {result['cpu']}, {args.threads} threads, commit {result['commit']}. 2,000 samples "
             f"against 2,000 held-out points (MMD², RBF bandwidths 0.05, 0.2, 1):\n\n"
             f"| path | MMD² generator | MMD² tilted | ratio | reload identical |\n|---|---:|---:|---:|---|\n"
             f"| Python API (example script, {api_s:.0f} s with the VAE) | {before:.5f} | {after:.5f} | "
             f"{after / before:.3f} | {reload_same} (new process) |\n"
             f"| CLI `--base-module` ({cli_s:.0f} s training) | {before:.5f} | {after_cli:.5f} | "
             f"{after_cli / before:.3f} | {cli_same} (two `tiltkit sample` processes) |\n\n"
             f"CLI samples equal the API's bit for bit: {same_as_api} (a `.npy` file given as --data is split "
             f"90/10 into training and held-out points, so the CLI run trains on 18,000 of the 20,000). "
             f"Figure: docs/own_2d_generator.png. "
             f"Reproduce: `.venv/bin/python benchmarks/own_generator.py`.")
    write_block("own-generator", table, "Tilt your own generator (`benchmarks/own_generator.py`)")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
