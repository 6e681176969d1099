"""Inception FID features: the fast paths against the exact float32 PyTorch path, in time and in FID.

    speed      seconds per image of each path on the same SPEED_N Fashion-MNIST test images, in one process
               (a warm-up batch each first), at --threads: float32 PyTorch (the reference, `--exact`), bf16
               autocast, and ONNX Runtime in float32 at batch sizes ONNX_BATCHES
    fid-bf16   the FID of the Denoising-EBM benchmark's 10,000 two-stage samples (runs/bench-debm/samples_debm.npz)
    fid-onnx   under bf16 / ONNX Runtime, the test-set statistics by the same path, beside the float32 FID its
               inception-debm stage measured on the same samples with the reference path

Writes benchmarks/results/inception_speed.json and the `inception-speed` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/inception_speed.py --threads 2
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from common import ROOT, cpu_model, publish, run_stage, stage_cli
from tiltkit.data.source import DataSource
from tiltkit.metrics.features import InceptionFeatures, extract_features
from tiltkit.metrics.fid import FeatureStats, frechet_distance
from tiltkit.metrics.image_eval import INCEPTION_BATCH

SPEED_N = 500
ONNX_BATCHES = (25, INCEPTION_BATCH, 250)
SAMPLES = ROOT / "runs" / "bench-debm" / "samples_debm.npz"
EXACT_FROM = ROOT / "benchmarks" / "results" / "fashion_mnist_debm.json"  # its inception-debm stage
PATHS = {"bf16": {"bf16": True, "runtime": "torch"}, "onnx": {"runtime": "onnx"}}


def seconds_per_image(model: InceptionFeatures, x: torch.Tensor, batch: int) -> float:
    model(x[:batch])  # warm-up
    t0 = time.perf_counter()
    extract_features(model, x, batch)
    return round((time.perf_counter() - t0) / len(x), 4)


def speed(test: torch.Tensor) -> dict:
    x = test[:SPEED_N]
    out = {"fp32_s_per_image": seconds_per_image(InceptionFeatures(runtime="torch"), x, INCEPTION_BATCH),
           "bf16_s_per_image": seconds_per_image(InceptionFeatures(**PATHS["bf16"]), x, INCEPTION_BATCH)}
    onnx = InceptionFeatures(**PATHS["onnx"])
    out |= {f"onnx_batch{b}_s_per_image": seconds_per_image(onnx, x, b) for b in ONNX_BATCHES}
    out |= {f"speedup_{k.removesuffix('_s_per_image')}": round(out["fp32_s_per_image"] / v, 2)
            for k, v in out.items() if k != "fp32_s_per_image"}
    return out


def fid(path: str, test: torch.Tensor) -> dict:
    model = InceptionFeatures(**PATHS[path])
    samples = torch.from_numpy(np.load(SAMPLES)["x"])
    ref = FeatureStats.from_features(extract_features(model, test, INCEPTION_BATCH, quiet=False))
    got = frechet_distance(FeatureStats.from_features(extract_features(model, samples, INCEPTION_BATCH, quiet=False)),
                           ref)
    exact = json.loads(EXACT_FROM.read_text())["stages"]["inception-debm"]["model"]["inception_fid"]
    return {"n": len(samples), f"{path}_fid": round(got, 3), "fp32_fid": round(exact, 3),
            "difference": round(got - exact, 3)}


def section(r: dict) -> str:
    st = r["stages"]
    sp = st.get("speed")
    if sp:
        onnx = ", ".join(f"batch {b} {sp[f'onnx_batch{b}_s_per_image']} s ({sp[f'speedup_onnx_batch{b}']}×)"
                         for b in ONNX_BATCHES if f"onnx_batch{b}_s_per_image" in sp)
        speed_line = (f"Time per image ({SPEED_N} test images; batch {INCEPTION_BATCH} unless given): float32 PyTorch "
                      f"(reference) {sp['fp32_s_per_image']} s; bf16 autocast {sp['bf16_s_per_image']} s "
                      f"({sp['speedup_bf16']}× faster); ONNX Runtime, float32: {onnx}.")
    else:
        speed_line = "Speed: not yet run."
    fid_lines = []
    for path, label in (("bf16", "bf16 autocast"), ("onnx", "ONNX Runtime (float32)")):
        f = st.get(f"fid-{path}")
        fid_lines.append(f"FID of the Denoising-EBM's {f['n']} two-stage samples against the test set: float32 "
                         f"PyTorch {f['fp32_fid']}, {label} {f[f'{path}_fid']} (difference {f['difference']:+.3f}; "
                         "the issue's bound is 0.3)" + (f", measured at commit {f['stamp']['commit']}." if "stamp" in f
                                                        else ".") if f else f"FID, {label}: not yet run.")
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} threads, torch {r['torch']}.\n\n"
            f"{speed_line}\n\n" + "\n\n".join(fid_lines))


def main() -> None:
    args, stages, results = stage_cli(__doc__, ("speed", "fid-bf16", "fid-onnx"), ROOT / "runs" / "inception-speed",
                                      "inception_speed.json")
    test = DataSource("fashion-mnist").images("test").x
    results.update({"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__})
    for stage in stages:
        fn = speed if stage == "speed" else lambda t, path=stage.removeprefix("fid-"): fid(path, t)
        run_stage(stage, results, lambda fn=fn: fn(test))
    publish(results, "inception-speed", section, "Inception features: fast paths against float32 "
            "(`benchmarks/inception_speed.py`)", stamp=bool(stages))


if __name__ == "__main__":
    main()
