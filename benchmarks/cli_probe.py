"""A hostile but realistic user at the command line: every command given bad or edge input, each in a fresh
`python -m tiltkit` process, as a user types it. A bad input must give one line on stderr and exit 2 (3
for a divergence), a valid one exit 0 and a correct result (checked per case), and no input a traceback
unless --debug is given.

    .venv/bin/python benchmarks/cli_probe.py [--out runs/probe] [--jobs 2]      # ~6 min on 2 cores

First a few tiny runs are trained (2-D VAE and tilt, an image VAE, a pixel EBM, a Denoising-EBM) on data
written here; then the cases run, those that only read in parallel. Writes benchmarks/results/cli_probe.json
(every case: its command, the exit code and first stderr line it got) and the BENCHMARKS.md block.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from common import ROOT, cpu_model, git_commit, write_block

TINY_BASE = ["--set", "batch_size=64", "--set", "n_train=1000", "--set", "checkpoint_every=10",
             "--set", "model_kwargs={latent_dim: 2, hidden: 16, depth: 2}"]
TINY_TILT = ["--set", "batch_size=32", "--set", "checkpoint_every=3", "--set", "train_sampler.steps=3",
             "--set", "sample_sampler.steps=5", "--set", "energy_kwargs={hidden: 16, depth: 2, fourier_features: 8}"]
IMAGE_VAE = ["--model", "conv-vae", "--set", "batch_size=16", "--set", "model_kwargs.latent_dim=4"]
PIXEL_EBM = ["--set", "energy=conv-small", "--set", "batch_size=8", "--set", "train_sampler.steps=2",
             "--set", "sample_sampler.steps=2"]
DEBM = ["--set", "batch_size=4", "--set", "latent_sampler.steps=1", "--set", "pixel_sampler.steps=1",
        "--set", "sample_latent_sampler.steps=1", "--set", "sample_pixel_sampler.steps=1"]


@dataclass
class Case:
    name: str
    argv: list[str]
    code: int = 2  # the exit code a user should get
    says: str = ""  # a bad input: words its one line must hold
    check: Callable[[subprocess.CompletedProcess], bool] | None = None  # a valid input: is the result right
    env: dict = field(default_factory=dict)
    serial: bool = False  # writes into a shared run: run alone, in order


def tiltkit(argv: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tiltkit", *argv], capture_output=True, text=True, env=full,
                          timeout=timeout)


def write_inputs(w: Path) -> None:
    """The data files a user might hand over, good and bad."""
    rng = np.random.default_rng(0)
    np.save(w / "points.npy", rng.normal(size=(600, 2)).astype(np.float32))
    np.savetxt(w / "points.csv", rng.normal(size=(200, 2)), delimiter=",")
    (w / "text.csv").write_text("a,b\nc,d\n")
    np.save(w / "nan.npy", np.array([[0.0, np.nan], [1.0, 1.0]]))
    np.save(w / "inf.npy", np.array([[0.0, np.inf], [1.0, 1.0]]))
    np.save(w / "empty.npy", np.zeros((0, 2)))
    np.save(w / "one_row.npy", np.zeros((1, 2)))
    np.save(w / "rank5.npy", np.zeros((5, 2, 2, 2, 2)))
    np.save(w / "complex.npy", (rng.normal(size=(50, 2)) + 1j).astype(np.complex64))
    np.save(w / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    (w / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    images = rng.integers(0, 256, (64, 1, 16, 16), dtype=np.uint8)
    np.save(w / "images.npy", images)
    np.savez(w / "images.npz", x=images)
    np.savez(w / "nokey.npz", a=images, b=images)
    rgb = rng.integers(0, 256, (64, 3, 16, 16), dtype=np.uint8)
    np.savez(w / "split_rgb.npz", x_train=rgb, x_test=rgb[:32])
    np.save(w / "images_out_of_range.npy", rng.normal(size=(64, 1, 16, 16)).astype(np.float32) * 300)
    (w / "empty_dir").mkdir()
    (w / "not_images").mkdir()
    (w / "not_images" / "a.txt").write_text("hello")
    from PIL import Image
    (w / "mixed").mkdir()
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(w / "mixed" / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(w / "mixed" / "b.png")
    (w / "broken_png").mkdir()
    (w / "broken_png" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (w / "idx").mkdir()  # an IDX directory whose labels run past the 10 classes
    with gzip.open(w / "idx" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 16, 0, 0, 0, 16]) + bytes(3 * 256))
    with gzip.open(w / "idx" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 42]))
    np.savez(w / "split.npz", x_train=images, x_test=images[:32], y_test=np.arange(32) % 10)
    (w / "a_file").write_text("I am a file")
    (w / "occupied").mkdir()
    (w / "occupied.npy").mkdir()
    (w / "occupied" / "keep.txt").write_text("mine")
    (w / "binary.yaml").write_bytes(bytes(range(256)))
    (w / "list.yaml").write_text("- 1\n- 2\n")
    (w / "unknown_key.yaml").write_text("stepz: 3\n")
    (w / "recipe.yaml").write_text("steps: 7\nlr: 0.001\n")
    (w / "half_run").mkdir()
    (w / "half_run" / "config.yaml").write_text("kind: base\ndata: 25gaussians\n")
    (w / "bad_kind").mkdir()
    (w / "bad_kind" / "config.yaml").write_text("kind: nonsense\n")
    (w / "yaml_run").mkdir()
    (w / "yaml_run" / "config.yaml").write_text("kind: base\nsteps: [\n")
    np.savez(w / "bad_stats.npz", mu=np.zeros(3), sigma=np.zeros((2, 2)))
    (w / "factories.py").write_text(
        "import torch\n"
        "def raises():\n    raise RuntimeError('boom')\n"
        "def not_a_module():\n    return 3\n"
        "def no_noise_shape():\n    return torch.nn.Linear(2, 2)\n"
        "def good():\n    torch.manual_seed(0)\n    m = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(),"
        " torch.nn.Linear(16, 2))\n    m.noise_shape = (2,)\n    return m\n"
        "def nan_output():\n    class N(torch.nn.Module):\n        noise_shape = (2,)\n"
        "        def forward(self, e):\n            return e * float('nan')\n    return N()\n")


def train_runs(w: Path) -> None:
    """The runs the cases read (each checked to have trained)."""
    steps = [
        ["train", "base", "--data", "25gaussians", "--out", str(w / "vae"), "--steps", "20", *TINY_BASE],
        ["train", "tilt", "--base", str(w / "vae"), "--out", str(w / "tilt"), "--steps", "6", *TINY_TILT],
        ["train", "base", "--data", str(w / "images.npy"), "--out", str(w / "ivae"), "--steps", "4", *IMAGE_VAE],
        ["train", "tilt", "--base", "none", "--data", str(w / "images.npy"), "--out", str(w / "pebm"), "--steps", "3",
         *PIXEL_EBM],
        ["train", "tilt", "--base", str(w / "ivae"), "--out", str(w / "itilt"), "--steps", "3", *PIXEL_EBM],
        ["train", "debm", "--data", str(w / "images.npy"), "--out", str(w / "debm"), "--steps", "2", *DEBM],
    ]
    for argv in steps:
        done = tiltkit([*argv, "--quiet"])
        if done.returncode != 0:
            raise SystemExit(f"setup failed: tiltkit {' '.join(argv)}\n{done.stderr}")
    for name in ("corrupt", "no_manifest", "bad_manifest"):
        shutil.copytree(w / "vae", w / name)
    newest = lambda run: sorted((run / "checkpoints").glob("step_*"))[-1]  # noqa: E731
    weights = newest(w / "corrupt") / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    for run in (w / "no_manifest",):
        for ckpt in (run / "checkpoints").glob("step_*"):
            (ckpt / "manifest.json").unlink()
            weights = ckpt / "weights.safetensors"
            data = bytearray(weights.read_bytes())
            data[-5] ^= 0xFF
            weights.write_bytes(bytes(data))
    for ckpt in (w / "bad_manifest" / "checkpoints").glob("step_*"):
        (ckpt / "manifest.json").write_text(json.dumps({"format": 1, "files": {"weights.safetensors": {"sha256": []}}}))
    (w / "empty_run").mkdir()
    shutil.copy(w / "vae" / "config.yaml", w / "empty_run" / "config.yaml")


def file_is(path: Path, magic: bytes) -> Callable:
    return lambda done: path.is_file() and path.read_bytes()[:len(magic)] == magic


def json_out(test: Callable[[dict], bool]) -> Callable:
    def check(done: subprocess.CompletedProcess) -> bool:
        try:
            return test(json.loads(done.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError, KeyError, TypeError, AttributeError):
            return False
    return check


def config_of(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def cases(w: Path) -> list[Case]:
    o = lambda name: str(w / "out" / name)  # noqa: E731  a fresh output path per case
    vae, tilt, ivae, itilt, pebm, debm = (str(w / n) for n in ("vae", "tilt", "ivae", "itilt", "pebm", "debm"))
    B = ["train", "base"]
    T = ["train", "tilt"]
    bad = [
        # ---- the command line itself
        Case("no command", []),
        Case("unknown command", ["frobnicate"], says="invalid choice"),
        Case("train without what", ["train"]),
        Case("unknown train command", ["train", "glow"], says="invalid choice"),
        Case("unknown flag", ["sample", vae, "--n", "4", "--out", o("s.npy"), "--bogus"], says="unrecognized"),
        # ---- train base: data
        Case("unknown data set", [*B, "--data", "gaussians25", "--out", o("b1")], says="unknown data set"),
        Case("missing data file", [*B, "--data", str(w / "nope.npy"), "--out", o("b2")], says="does not exist"),
        Case("NaN in points", [*B, "--data", str(w / "nan.npy"), "--out", o("b3")], says="NaN"),
        Case("inf in points", [*B, "--data", str(w / "inf.npy"), "--out", o("b4")]),
        Case("no rows", [*B, "--data", str(w / "empty.npy"), "--out", o("b5")], says="rows"),
        Case("one row", [*B, "--data", str(w / "one_row.npy"), "--out", o("b6")], says="rows"),
        Case("rank-5 array", [*B, "--data", str(w / "rank5.npy"), "--out", o("b7")]),
        Case("complex array", [*B, "--data", str(w / "complex.npy"), "--out", o("b8")], says="complex"),
        Case("string array", [*B, "--data", str(w / "strings.npy"), "--out", o("b9")]),
        Case("garbage .npy", [*B, "--data", str(w / "garbage.npy"), "--out", o("b10")]),
        Case("text CSV", [*B, "--data", str(w / "text.csv"), "--out", o("b11")]),
        Case("empty folder", [*B, "--data", str(w / "empty_dir"), "--out", o("b12")]),
        Case("folder without images", [*B, "--data", str(w / "not_images"), "--out", o("b13")]),
        Case("folder mixing gray and RGB", [*B, "--data", str(w / "mixed"), "--model", "conv-vae", "--out", o("b14")],
             says="mixes grayscale and colour"),
        Case("broken PNG", [*B, "--data", str(w / "broken_png"), "--model", "conv-vae", "--out", o("b15")]),
        Case(".npz with two arrays and no x", [*B, "--data", str(w / "nokey.npz"), "--model", "conv-vae",
                                               "--out", o("b16")], says="has keys"),
        Case("IDX labels outside 0..9", [*B, "--data", "fashion-mnist", "--data-dir", str(w / "idx"),
                                         "--model", "conv-vae", "--out", o("b17")], says="label 42"),
        Case("no --data", [*B, "--out", o("b18")], says="--data is required"),
        Case("point model on images", [*B, "--data", str(w / "images.npy"), "--model", "vae", "--out", o("b19")]),
        Case("unknown model", [*B, "--data", "moons", "--model", "gan", "--out", o("b20")]),
        Case("hflip on points", [*B, "--data", "moons", "--set", "hflip=true", "--out", o("b21")], says="hflip"),
        Case("image size 0", [*B, "--data", str(w / "mixed"), "--image-size", "0", "--out", o("b22")]),
        # ---- train: numbers and options
        Case("zero steps", [*B, "--data", "moons", "--steps", "0", "--out", o("c1")], says="positive integer"),
        Case("negative steps", [*B, "--data", "moons", "--steps", "-3", "--out", o("c2")]),
        Case("steps not a number", [*B, "--data", "moons", "--steps", "ten", "--out", o("c3")]),
        Case("negative seed", [*B, "--data", "moons", "--seed", "-1", "--out", o("c4")], says="seed"),
        Case("seed past 64 bits", [*B, "--data", "moons", "--seed", str(2**70), "--out", o("c5")], says="seed"),
        Case("negative lr", [*B, "--data", "moons", "--set", "lr=-1", "--out", o("c6")], says="lr must be positive"),
        Case("lr not a number", [*B, "--data", "moons", "--set", "lr=fast", "--out", o("c7")], says="invalid value"),
        Case("broken --set YAML", [*B, "--data", "moons", "--set", "lr=[1,", "--out", o("c8")], says="not valid YAML"),
        Case("--set without =", [*B, "--data", "moons", "--set", "lr", "--out", o("c9")], says="KEY=VALUE"),
        Case("--set with empty key", [*B, "--data", "moons", "--set", "=3", "--out", o("c10")], says="KEY=VALUE"),
        Case("unknown --set key", [*B, "--data", "moons", "--set", "lrr=1", "--out", o("c11")], says="unknown key"),
        Case("dotted --set into a number", [*B, "--data", "moons", "--set", "lr.x=1", "--out", o("c12")],
             says="single value"),
        Case("unknown model kwarg", [*B, "--data", "moons", "--set", "model_kwargs.bogus=1", "--out", o("c13")]),
        Case("zero batch size", [*B, "--data", "moons", "--set", "batch_size=0", "--out", o("c14")]),
        Case("zero checkpoint_every", [*B, "--data", "moons", "--set", "checkpoint_every=0", "--out", o("c15")]),
        Case("rollback factor 2", [*B, "--data", "moons", "--set", "rollback_factor=2", "--out", o("c16")]),
        Case("unknown divergence policy", [*B, "--data", "moons", "--set", "on_divergence=ignore", "--out", o("c17")]),
        Case("unknown precision", [*B, "--data", "moons", "--precision", "fp8", "--out", o("c18")]),
        Case("unknown logger", [*B, "--data", "moons", "--log", "wandb", "--out", o("c19")]),
        Case("negative log_images_every", [*B, "--data", "moons", "--set", "log_images_every=-1", "--out", o("c20")]),
        Case("missing --config", [*B, "--data", "moons", "--config", str(w / "nope.yaml"), "--out", o("c21")],
             says="cannot read"),
        Case("binary --config", [*B, "--data", "moons", "--config", str(w / "binary.yaml"), "--out", o("c22")],
             says="cannot read"),
        Case("--config of a list", [*B, "--data", "moons", "--config", str(w / "list.yaml"), "--out", o("c23")],
             says="mapping"),
        Case("--config with an unknown key", [*B, "--data", "moons", "--config", str(w / "unknown_key.yaml"),
                                              "--out", o("c24")], says="unknown key"),
        # ---- train: devices and output folders
        Case("mps absent", [*B, "--data", "moons", "--device", "mps", "--out", o("d1")], says="MPS"),
        Case("meta device", [*B, "--data", "moons", "--device", "meta", "--out", o("d2")], says="device"),
        Case("cuda absent", [*B, "--data", "moons", "--device", "cuda", "--out", o("d3")]),
        Case("cuda:7 absent", [*B, "--data", "moons", "--device", "cuda:7", "--out", o("d4")]),
        Case("device gpu", [*B, "--data", "moons", "--device", "gpu", "--out", o("d5")]),
        Case("--out under a file", [*B, "--data", "moons", "--out", str(w / "a_file" / "run")],
             says="not a directory"),
        Case("--out under /proc", [*B, "--data", "moons", "--out", "/proc/tiltkit_run"]),
        Case("--out a file", [*B, "--data", "moons", "--out", str(w / "a_file")], says="is a file"),
        Case("--out not empty", [*B, "--data", "moons", "--out", str(w / "occupied")], says="not empty"),
        # ---- train: resume
        Case("resume of nothing", [*B, "--out", o("e1"), "--resume"], says="does not exist"),
        Case("resume a tilt run as base", [*B, "--out", tilt, "--resume"], says="tilt run"),
        Case("resume with another lr", [*T, "--out", tilt, "--resume", "--set", "lr=0.5"], says="lr"),
        Case("resume with other data", [*B, "--out", vae, "--resume", "--data", "moons"], says="data"),
        Case("resume with fewer steps", [*T, "--out", tilt, "--resume", "--steps", "2"], says="trained 6 steps"),
        Case("resume with another sampler", [*T, "--out", tilt, "--resume", "--set", "train_sampler.kind=langevin"],
             says="train_sampler"),
        Case("resume a folder that is no run", [*B, "--out", str(w / "occupied"), "--resume"]),
        # ---- train tilt
        Case("tilt without --base", [*T, "--out", o("f1")], says="--base"),
        Case("tilt on a missing base", [*T, "--base", str(w / "nope"), "--out", o("f2")], says="does not exist"),
        Case("tilt on a file", [*T, "--base", str(w / "a_file"), "--out", o("f3")], says="is a file"),
        Case("tilt on a folder that is no run", [*T, "--base", str(w / "occupied"), "--out", o("f4")],
             says="not a tiltkit run"),
        Case("tilt on a tilt run", [*T, "--base", tilt, "--out", o("f5")], says="base run"),
        Case("tilt on an unreadable config", [*T, "--base", str(w / "yaml_run"), "--out", o("f6")]),
        Case("tilt on a config of unknown kind", [*T, "--base", str(w / "bad_kind"), "--out", o("f7")]),
        Case("tilt with --data on a base run", [*T, "--base", vae, "--data", "moons", "--out", o("f8")],
             says="pixel EBM"),
        Case("pixel EBM without data", [*T, "--base", "none", "--out", o("f9")], says="needs data"),
        Case("pixel EBM on points", [*T, "--base", "none", "--data", "moons", "--out", o("f10")], says="images"),
        Case("unknown energy", [*T, "--base", vae, "--set", "energy=transformer", "--out", o("f11")]),
        Case("unknown energy kwarg", [*T, "--base", vae, "--set", "energy_kwargs.bogus=1", "--out", o("f12")]),
        Case("unknown sampler", [*T, "--base", vae, "--set", "train_sampler.kind=gibbs", "--out", o("f13")],
             says="invalid value 'gibbs'"),
        Case("zero sampler steps", [*T, "--base", vae, "--set", "train_sampler.steps=0", "--out", o("f14")]),
        Case("negative step size", [*T, "--base", vae, "--set", "sample_sampler.step_size=-0.1", "--out", o("f15")]),
        Case("betas [2, 3]", [*T, "--base", vae, "--set", "betas=[2, 3]", "--out", o("f16")], says="betas"),
        Case("betas of one number", [*T, "--base", vae, "--set", "betas=[0.5]", "--out", o("f17")]),
        Case("reinit_prob 2", [*T, "--base", vae, "--set", "reinit_prob=2", "--out", o("f18")], says="reinit_prob"),
        Case("compile maybe", [*T, "--base", vae, "--set", "compile=maybe", "--out", o("f19")], says="compile"),
        Case("unknown compile mode", [*T, "--base", vae, "--set", "compile_mode=turbo", "--out", o("f20")]),
        Case("unknown pixel range", [*T, "--base", "none", "--data", str(w / "images.npy"),
                                     "--set", "pixel_range=bytes", "--out", o("f21")], says="pixel_range"),
        Case("validation on points", [*T, "--base", vae, "--set", "eval_every=5", "--out", o("f22")],
             says="image data"),
        Case("persistent not a bool", [*T, "--base", vae, "--set", "persistent=perhaps", "--out", o("f23")]),
        Case("base-module without colon", [*T, "--base-module", "factories", "--data", str(w / "points.npy"),
                                           "--out", o("f24")], env={"PYTHONPATH": str(w)}),
        Case("base-module of a missing module", [*T, "--base-module", "nomodule:f", "--data", str(w / "points.npy"),
                                                 "--out", o("f25")], env={"PYTHONPATH": str(w)}),
        Case("base-module of a missing factory", [*T, "--base-module", "factories:nope",
                                                  "--data", str(w / "points.npy"), "--out", o("f26")],
             env={"PYTHONPATH": str(w)}),
        Case("base-module factory raises", [*T, "--base-module", "factories:raises", "--data", str(w / "points.npy"),
                                            "--out", o("f27")], env={"PYTHONPATH": str(w)}, says="boom"),
        Case("base-module factory returns 3", [*T, "--base-module", "factories:not_a_module",
                                               "--data", str(w / "points.npy"), "--out", o("f28")],
             env={"PYTHONPATH": str(w)}),
        Case("base-module without noise_shape", [*T, "--base-module", "factories:no_noise_shape",
                                                 "--data", str(w / "points.npy"), "--out", o("f29")],
             env={"PYTHONPATH": str(w)}, says="noise_shape"),
        Case("base-module with NaN output", [*T, "--base-module", "factories:nan_output",
                                             "--data", str(w / "points.npy"), "--out", o("f30")],
             env={"PYTHONPATH": str(w)}),
        Case("base-module without data", [*T, "--base-module", "factories:good", "--out", o("f31")],
             env={"PYTHONPATH": str(w)}, says="--data is required"),
        Case("base-module and --base", [*T, "--base-module", "factories:good", "--base", vae,
                                        "--data", str(w / "points.npy"), "--out", o("f32")],
             env={"PYTHONPATH": str(w)}),
        # ---- train debm
        Case("debm on points", ["train", "debm", "--data", "moons", "--out", o("g1")], says="images"),
        Case("debm with a zero sigma ladder", ["train", "debm", "--data", str(w / "images.npy"),
                                               "--set", "model_kwargs.n_sigmas=0", "--out", o("g2")]),
        # ---- sample
        Case("sample a missing run", ["sample", str(w / "nope"), "--n", "4", "--out", o("s1.npy")],
             says="does not exist"),
        Case("sample a folder that is no run", ["sample", str(w / "occupied"), "--n", "4", "--out", o("s2.npy")]),
        Case("sample a run without checkpoints", ["sample", str(w / "half_run"), "--n", "4", "--out", o("s3.npy")],
             says="no checkpoint"),
        Case("sample n 0", ["sample", vae, "--n", "0", "--out", o("s4.npy")], says="positive integer"),
        Case("sample to .txt", ["sample", vae, "--n", "4", "--out", o("s5.txt")], says=".npy"),
        Case("trajectory to .npy", ["sample", tilt, "--n", "4", "--trajectory", "--out", o("s6.npy")], says=".png"),
        Case("trajectory of a base run", ["sample", vae, "--n", "4", "--trajectory", "--out", o("s7.png")],
             says="need a tilted run"),
        Case("compare-base of a base run", ["sample", vae, "--n", "4", "--compare-base", "--out", o("s8.png")]),
        Case("data-space chains off a flow", ["sample", tilt, "--n", "4", "--space", "data", "--out", o("s9.npy")]),
        Case("sampler steps on a base run", ["sample", vae, "--n", "4", "--steps", "5", "--out", o("s10.npy")]),
        Case("negative step size", ["sample", tilt, "--n", "4", "--step-size", "-1", "--out", o("s11.npy")]),
        Case("every 0", ["sample", tilt, "--n", "4", "--trajectory", "--every", "0", "--out", o("s12.png")]),
        Case("sample under a file", ["sample", vae, "--n", "4", "--out", str(w / "a_file" / "s.npy")],
             says="is a file"),
        Case("sample into a folder", ["sample", vae, "--n", "4", "--out", str(w / "occupied.npy")], says="folder"),
        Case("plot under a file", ["plot", vae, "--out", str(w / "a_file" / "c.png")], says="is a file"),
        Case("sample seed past 64 bits", ["sample", vae, "--n", "4", "--seed", str(2**64), "--out", o("s13.npy")],
             says="seed"),
        Case("sample on mps", ["sample", vae, "--n", "4", "--device", "mps", "--out", o("s14.npy")]),
        Case("bit-flipped weights", ["sample", str(w / "corrupt"), "--n", "4", "--out", o("s15.npy")],
             says="corrupt"),
        Case("deleted manifests", ["sample", str(w / "no_manifest"), "--n", "4", "--out", o("s16.npy")],
             says="manifest"),
        Case("malformed manifests", ["sample", str(w / "bad_manifest"), "--n", "4", "--out", o("s17.npy")],
             says="corrupt"),
        Case("config of unknown kind", ["sample", str(w / "bad_kind"), "--n", "4", "--out", o("s18.npy")]),
        Case("unreadable config", ["sample", str(w / "yaml_run"), "--n", "4", "--out", o("s19.npy")]),
        # ---- eval
        Case("eval bogus metric on points", ["eval", vae, "--metrics", "bogus"], says="toy metrics"),
        Case("eval fid on points", ["eval", vae, "--metrics", "fid"], says="toy metrics"),
        Case("eval one sample", ["eval", vae, "--n", "1"], says="at least 10"),
        Case("eval unknown data", ["eval", vae, "--data", "gaussians25"]),
        Case("eval on 3-D points", ["eval", vae, "--data", str(w / "rank5.npy")]),
        Case("eval bogus metric on images", ["eval", ivae, "--metrics", "bogus"]),
        Case("eval of a single array", ["eval", ivae, "--metrics", "fid", "--n", "20"], says="no test split"),
        Case("eval images against points", ["eval", ivae, "--data", "moons"], says="point set"),
        Case("eval images against RGB images", ["eval", ivae, "--data", str(w / "split_rgb.npz"),
                                                "--metrics", "inception-fid", "--n", "20"]),
        # ---- ood
        Case("ood of a 2-D run", ["ood", vae, "--ood", "uniform", "--out", o("o1")], says="run on points"),
        Case("ood unknown set", ["ood", ivae, "--in", str(w / "split.npz"), "--ood", "martians", "--out", o("o2")],
             says="martians"),
        Case("ood unknown score", ["ood", ivae, "--ood", "uniform", "--scores", "vibes", "--out", o("o3")]),
        Case("ood score the run lacks", ["ood", ivae, "--ood", "uniform", "--scores", "texture", "--out", o("o4")]),
        Case("ood out a file", ["ood", ivae, "--ood", "uniform", "--out", str(w / "a_file")], says="is a file"),
        Case("ood under a file", ["ood", ivae, "--in", str(w / "split.npz"), "--ood", "uniform",
                                  "--out", str(w / "a_file" / "o")], says="is a file"),
        Case("ood n 0", ["ood", ivae, "--ood", "uniform", "--n", "0", "--out", o("o5")]),
        Case("ood empty set list", ["ood", ivae, "--ood", ",", "--out", o("o6")]),
        Case("ood unknown in-set", ["ood", ivae, "--ood", "uniform", "--in", "martians", "--out", o("o7")]),
        # ---- fid
        Case("fid of a missing set", ["fid", str(w / "nope.npy"), str(w / "images.npy"), "--metrics",
                                      "inception-fid"], says="does not exist"),
        Case("fid unknown metric", ["fid", str(w / "images.npy"), str(w / "images.npy"), "--metrics", "vibes"]),
        Case("fid of points", ["fid", str(w / "points.npy"), str(w / "images.npy"), "--metrics", "inception-fid"]),
        Case("fid of malformed statistics", ["fid", str(w / "bad_stats.npz"), str(w / "images.npy"),
                                             "--metrics", "inception-fid"]),
        Case("fid domain features without a labelled set", ["fid", str(w / "images.npy"), str(w / "images.npz")]),
        Case("fid of out-of-range floats", ["fid", str(w / "images_out_of_range.npy"), str(w / "images.npy"),
                                            "--metrics", "inception-fid"]),
        # ---- plot
        Case("plot a folder that is no run", ["plot", str(w / "occupied")]),
        Case("plot a run before its first step", ["plot", str(w / "empty_run")], says="no training step"),
        Case("plot to .jpg", ["plot", vae, "--out", o("p.jpg")], says=".png"),
        # ---- --debug keeps the exit code
        Case("--debug on a bad input", ["--debug", *B, "--data", "gaussians25", "--out", o("z1")],
             says="unknown data set"),
    ]
    out = w / "out"
    good = [
        Case("--version", ["--version"], 0, check=lambda d: d.stdout.strip() == "tiltkit 0.1.0"),
        Case("--help", ["--help"], 0, check=lambda d: "train" in d.stdout and "sample" in d.stdout),
        Case("train base on a CSV", [*B, "--data", str(w / "points.csv"), "--out", o("v1"), "--steps", "3",
                                     *TINY_BASE], 0, check=lambda d: config_of(out / "v1")["steps"] == 3),
        Case("dotted --set keeps MALA", [*T, "--base", vae, "--out", o("v2"), "--steps", "2", *TINY_TILT,
                                         "--set", "train_sampler.steps=5"], 0,
             check=lambda d: config_of(out / "v2")["train_sampler"]["kind"] == "mala"
             and config_of(out / "v2")["train_sampler"]["steps"] == 5),
        Case("--config recipe", [*B, "--data", "moons", "--config", str(w / "recipe.yaml"), "--out", o("v3"),
                                 *TINY_BASE], 0, check=lambda d: config_of(out / "v3")["steps"] == 7),
        Case("README model names on images", [*B, "--data", str(w / "images.npy"), "--out", o("v4"), "--steps", "2",
                                              "--model", "conv-vae", "--set", "batch_size=16"], 0,
             check=lambda d: config_of(out / "v4")["model"] == "conv-vae"),
        Case("tensorboard log", [*B, "--data", "moons", "--out", o("v5"), "--steps", "2", "--log", "tensorboard",
                                 *TINY_BASE], 0, check=lambda d: any((out / "v5" / "tensorboard").glob("events.*"))),
        Case("provenance recorded", [*B, "--data", "moons", "--out", o("v6"), "--steps", "2", *TINY_BASE], 0,
             check=lambda d: {"tiltkit", "torch", "git_commit", "device", "started"}
             <= set(config_of(out / "v6")["provenance"]) and config_of(out / "v6")["provenance"]["device"] == "cpu"),
        Case("own generator through --base-module", [*T, "--base-module", "factories:good", "--data",
                                                     str(w / "points.npy"), "--out", o("v7"), "--steps", "2",
                                                     *TINY_TILT], 0, env={"PYTHONPATH": str(w)},
             check=lambda d: config_of(out / "v7")["kind"] == "tilt-module"),
        Case("sample .npy of 2-D points", ["sample", tilt, "--n", "50", "--out", o("v8.npy")], 0,
             check=lambda d: np.load(out / "v8.npy").shape == (50, 2) and np.isfinite(np.load(out / "v8.npy")).all()),
        Case("sample scatter of 2-D points", ["sample", tilt, "--n", "50", "--out", o("v9.png")], 0,
             check=file_is(out / "v9.png", b"\x89PNG")),
        Case("trajectory of a 2-D tilt", ["sample", tilt, "--n", "8", "--trajectory", "--every", "1",
                                          "--out", o("v10.png")], 0, check=file_is(out / "v10.png", b"\x89PNG")),
        Case("compare-base of a 2-D tilt", ["sample", tilt, "--n", "50", "--compare-base", "--out", o("v11.png")], 0,
             check=file_is(out / "v11.png", b"\x89PNG")),
        Case("sample images .npz", ["sample", itilt, "--n", "8", "--out", o("v12.npz")], 0,
             check=lambda d: np.load(out / "v12.npz")["x"].shape == (8, 1, 16, 16)
             and np.load(out / "v12.npz")["x"].dtype == np.uint8),
        Case("pixel EBM trajectory", ["sample", pebm, "--n", "4", "--trajectory", "--every", "1",
                                      "--out", o("v13.png")], 0, check=file_is(out / "v13.png", b"\x89PNG")),
        Case("debm compare", ["sample", debm, "--n", "4", "--compare-base", "--out", o("v14.png")], 0,
             check=file_is(out / "v14.png", b"\x89PNG")),
        Case("eval of a 2-D run", ["eval", tilt, "--n", "200"], 0,
             check=json_out(lambda r: r["mmd"] >= 0 and r["emd"] > 0 and r["n"] == 200)),
        Case("ood of an image run", ["ood", ivae, "--in", str(w / "split.npz"), "--ood", "uniform,vflip", "--n", "32",
                                     "--out", o("v15")], 0,
             check=json_out(lambda r: set(r["results"]) == {"uniform", "vflip"}
                            and all(0 <= v["auroc"] <= 1 for s in r["results"].values() for v in s.values()))),
        Case("fid of a set with itself", ["fid", str(w / "images.npy"), str(w / "images.npz"),
                                          "--metrics", "inception-fid"], 0,
             check=json_out(lambda r: abs(r["inception_fid"]) < 1e-3)),
        Case("plot a 2-D tilt", ["plot", tilt, "--out", o("v16.png")], 0, check=file_is(out / "v16.png", b"\x89PNG")),
    ]
    resume = [  # in order, on a copy of the tilt run
        Case("resume extends", [*T, "--out", o("rt"), "--resume", "--steps", "8"], 0,
             check=lambda d: config_of(out / "rt")["steps"] == 8, serial=True),
        Case("resume on another device name", [*T, "--out", o("rt"), "--resume", "--steps", "9", "--device", "cpu"],
             0, check=lambda d: config_of(out / "rt")["steps"] == 9, serial=True),
    ]
    return bad + good + resume


def run_case(case: Case, w: Path) -> dict:
    start = time.perf_counter()
    done = tiltkit(case.argv, case.env)
    err = done.stderr.strip()
    lines = err.splitlines()
    traceback = "Traceback" in done.stderr
    debug = "--debug" in case.argv
    ok = done.returncode == case.code and (debug or not traceback)
    if case.code == 0:
        ok = ok and (case.check is None or bool(case.check(done)))
    else:  # one line, holding the words; with --debug the traceback comes first and the same line last
        ok = ok and (debug or len(lines) == 1) and case.says in (lines[-1] if lines else "")
    return {"name": case.name, "argv": " ".join(case.argv).replace(str(w), "W"), "expected": case.code,
            "exit": done.returncode, "stderr": (lines[-1] if lines else "")[:300].replace(str(w), "W"),
            "stderr_lines": len(lines), "traceback": traceback, "ok": ok,
            "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "probe")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    w = args.out.resolve()
    shutil.rmtree(w, ignore_errors=True)
    (w / "out").mkdir(parents=True)
    start = time.perf_counter()
    write_inputs(w)
    train_runs(w)
    todo = cases(w)
    shutil.copytree(w / "tilt", w / "out" / "rt")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_case(c, w), [c for c in todo if not c.serial]))
    results += [run_case(c, w) for c in todo if c.serial]
    failed = [r for r in results if not r["ok"]]
    bad = [r for r in results if r["expected"] != 0]
    good = [r for r in results if r["expected"] == 0]
    summary = {"machine": cpu_model(), "commit": git_commit(), "cases": len(results), "bad_inputs": len(bad),
               "valid_inputs": len(good), "failed": len(failed), "minutes": round((time.perf_counter() - start) / 60, 1),
               "results": results}
    path = ROOT / "benchmarks" / "results" / "cli_probe.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"Machine: {summary['machine']}, commit {summary['commit']}, {summary['minutes']} min.", "",
             f"{len(bad)} bad inputs: {sum(r['ok'] for r in bad)} gave one line and exit 2 with the right words, "
             f"and no traceback; {len(good)} valid inputs: {sum(r['ok'] for r in good)} exited 0 with a correct "
             f"result. Every case, with the line it printed: benchmarks/results/cli_probe.json."]
    if failed:
        lines += ["", "| failed case | exit (expected) | stderr |", "|---|---|---|"]
        lines += [f"| {r['name']} | {r['exit']} ({r['expected']}) | {r['stderr'][:120]} |" for r in failed]
    write_block("cli-probe", "\n".join(lines), "Command-line probe (`benchmarks/cli_probe.py`)")
    for r in failed:
        print(f"FAILED {r['name']}: exit {r['exit']} (expected {r['expected']}), {r['stderr_lines']} lines, "
              f"traceback {r['traceback']}: {r['stderr'][:200]}")
    print(f"{len(results)} cases, {len(failed)} failed, {summary['minutes']} min")


if __name__ == "__main__":
    main()
