"""Shared fixtures: tiny runs that train in a second or two on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from tiltkit.config import BaseRunConfig, TiltRunConfig, from_dict
from tiltkit.training import train_base

TINY_BASE = {"steps": 40, "batch_size": 64, "n_train": 2000, "checkpoint_every": 20,
             "model_kwargs": {"latent_dim": 2, "hidden": 16, "depth": 2}}
TINY_TILT = {"steps": 6, "batch_size": 32, "checkpoint_every": 3, "buffer_size": 100,
             "energy_kwargs": {"hidden": 16, "depth": 2, "fourier_features": 8},
             "train_sampler": {"kind": "mala", "steps": 3, "step_size": 0.01},
             "sample_sampler": {"kind": "mala", "steps": 5, "step_size": 0.01}}


def sets(options: dict) -> list[str]:
    """Options as repeated `--set key=<JSON value>` command-line pairs."""
    out = []
    for key, value in options.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def tiltkit_process(*args: str, nproc: int = 1) -> subprocess.Popen:
    """`tiltkit ARGS --quiet` started in a fresh process (one thread), or under `torchrun --nproc-per-node nproc`."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, *launcher, "-m", "tiltkit", *args, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tiltkit(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    """`tiltkit ARGS --quiet` run to its end, as tiltkit_process starts it."""
    proc = tiltkit_process(*args, nproc=nproc)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def logged_step(run) -> int:
    """The last step in a run's metrics log (0 before the first)."""
    try:
        text = (run / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in text.splitlines()[:-1]]  # the last may be half-written
    return max(steps, default=0)


def wait_for_step(proc: subprocess.Popen, run, step: int) -> None:
    """Wait until the run `proc` trains into `run` has logged `step`."""
    deadline = time.monotonic() + 120
    while logged_step(run) < step:
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def tiny_base_cfg(**over) -> BaseRunConfig:
    return from_dict(BaseRunConfig, {**TINY_BASE, **over})


def tiny_tilt_cfg(base, **over) -> TiltRunConfig:
    return from_dict(TiltRunConfig, {**TINY_TILT, "base": str(base), **over})


@pytest.fixture(scope="session")
def base_run(tmp_path_factory):
    """A trained tiny VAE run on 25-Gaussians, shared read-only by tests."""
    out = tmp_path_factory.mktemp("runs") / "base"
    train_base(tiny_base_cfg(data="25gaussians"), out, quiet=True)
    return out
