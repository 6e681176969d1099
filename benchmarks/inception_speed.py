"""Inception FID features: bfloat16 autocast against the exact float32 path, in time and in FID.

    speed   seconds per image of both paths on the same SPEED_N Fashion-MNIST test images, in one process
            (a warm-up batch each first), at --threads
    fid     the FID of the Denoising-EBM benchmark's 10,000 two-stage samples (runs/bench-debm/samples_debm.npz)
            under bf16, its test-set statistics under bf16 too, beside the float32 FID its inception-debm stage
            measured on the same samples with the same code

Writes benchmarks/results/inception_speed.json and the `inception-speed` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/inception_speed.py --threads 2
"""

from __future__ import annotations

import datetime
import json
import time

import numpy as np
import torch

from common import ROOT, cpu_model, git_commit, run_stage, save_results, stage_cli, write_block
from tiltkit.data.source import DataSource
from tiltkit.metrics.features import InceptionFeatures, extract_features
from tiltkit.metrics.fid import FeatureStats, frechet_distance
from tiltkit.metrics.image_eval import INCEPTION_BATCH

SPEED_N = 500
SAMPLES = ROOT / "runs" / "bench-debm" / "samples_debm.npz"
EXACT_FROM = ROOT / "benchmarks" / "results" / "fashion_mnist_debm.json"  # its inception-debm stage


def speed(test: torch.Tensor) -> dict:
    x = test[:SPEED_N]
    out = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        model = InceptionFeatures(bf16=bf16)
        model(x[:INCEPTION_BATCH])  # warm-up
        t0 = time.perf_counter()
        extract_features(model, x, INCEPTION_BATCH)
        out[f"{name}_s_per_image"] = round((time.perf_counter() - t0) / len(x), 4)
    out["speedup"] = round(out["fp32_s_per_image"] / out["bf16_s_per_image"], 2)
    return out


def fid(test: torch.Tensor) -> dict:
    model = InceptionFeatures(bf16=True)
    samples = torch.from_numpy(np.load(SAMPLES)["x"])
    ref = FeatureStats.from_features(extract_features(model, test, INCEPTION_BATCH, quiet=False))
    got = frechet_distance(FeatureStats.from_features(extract_features(model, samples, INCEPTION_BATCH, quiet=False)),
                           ref)
    exact = json.loads(EXACT_FROM.read_text())["stages"]["inception-debm"]["model"]["inception_fid"]
    return {"n": len(samples), "bf16_fid": round(got, 3), "fp32_fid": round(exact, 3),
            "difference": round(got - exact, 3)}


def section(r: dict) -> str:
    st = r["stages"]
    sp, f = st.get("speed"), st.get("fid")
    speed_line = (f"Time per image ({SPEED_N} test images, batch {INCEPTION_BATCH}): float32 {sp['fp32_s_per_image']} s, "
                  f"bf16 autocast {sp['bf16_s_per_image']} s: {sp['speedup']}× faster." if sp else "Speed: not yet run.")
    fid_line = (f"FID of the Denoising-EBM's {f['n']} two-stage samples against the test set: float32 {f['fp32_fid']}, "
                f"bf16 {f['bf16_fid']} (difference {f['difference']:+.3f}; the issue's bound is 0.3)." if f else
                "FID: not yet run.")
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} threads, torch {r['torch']}.\n\n"
            f"{speed_line}\n\n{fid_line}")


def main() -> None:
    args, stages, results = stage_cli(__doc__, ("speed", "fid"), ROOT / "runs" / "inception-speed",
                                      "inception_speed.json")
    test = DataSource("fashion-mnist").images("test").x
    results.update({"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__})
    for stage in stages:
        run_stage(stage, results, lambda stage=stage: {"speed": speed, "fid": fid}[stage](test))
    results.update({"date": datetime.date.today().isoformat(), "commit": git_commit()})
    save_results(results)
    write_block("inception-speed", section(results), "Inception features: bf16 against float32 "
                "(`benchmarks/inception_speed.py`)")
    print(section(results))


if __name__ == "__main__":
    main()
