"""Mixed precision: a bf16 toy tilt run on CPU reaches the metrics of the float32 run; fp16 trains with its
gradient scaler; chains keep a float32 state under bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_base_cfg, tiny_tilt_cfg
from test_training import metric_lines
from tiltkit.data.toy import GAUSS25_SIGMA, gauss25_centres, toy_split
from tiltkit.metrics.toy import mmd2, mode_metrics
from tiltkit.precision import MixedPrecision, Precision
from tiltkit.samplers import SamplerConfig, SamplerKind
from tiltkit import load
from tiltkit.training import train_base, train_tilt
from tiltkit.training.checkpoint import latest_checkpoint

BASE = {"data": "25gaussians", "steps": 600, "batch_size": 256, "lr": 3e-3,
        "model_kwargs": {"latent_dim": 2, "hidden": 64, "depth": 2}}  # a base that misses most of the modes
TILT = {"steps": 150, "lr": 3e-3, "batch_size": 128,
        "energy_kwargs": {"hidden": 64, "depth": 2, "fourier_features": 32},
        "train_sampler": {"kind": "langevin", "steps": 20, "step_size": 0.01}}  # unadjusted: the bf16 chain path


def quality(run, tilted: bool = True) -> dict:
    """Mode metrics and MMD² of 1,000 samples (tilted: 100 MALA steps on U) against held-out points."""
    model, g = load(run, device="cpu").model, torch.Generator().manual_seed(1)
    if tilted:
        x = model.output(model.sample(SamplerConfig(SamplerKind.MALA, 100, 0.01), 1000, g).noise)
    else:
        x = model.decode(model.sample_noise(1000, g))
    x, held_out = x.detach().numpy(), toy_split("25gaussians", n_test=1000)[1]
    return {**mode_metrics(x, gauss25_centres(), GAUSS25_SIGMA), "mmd": mmd2(x, held_out)}


@pytest.mark.slow
def test_bf16_tilt_reaches_the_metrics_of_float32(tmp_path):
    train_base(tiny_base_cfg(**BASE), tmp_path / "base", quiet=True)
    runs = {p: tmp_path / p for p in ("32", "bf16")}
    for p, run in runs.items():
        train_tilt(tiny_tilt_cfg(tmp_path / "base", precision=p, **TILT), run, quiet=True)
    lines = {p: metric_lines(r) for p, r in runs.items()}
    assert [r["gap"] for r in lines["32"]] != [r["gap"] for r in lines["bf16"]]  # bf16 did run
    gap = {p: np.mean([r["gap"] for r in lines[p][-20:]]) for p in runs}
    assert gap["bf16"] == pytest.approx(gap["32"], rel=0.1)
    base, q = quality(tmp_path / "base", tilted=False), {p: quality(r) for p, r in runs.items()}
    assert q["32"]["hq"] > 5 * base["hq"] and q["32"]["modes"] == 25  # the tilt does its work (base: ~0.03, 16)
    assert q["bf16"]["hq"] == pytest.approx(q["32"]["hq"], abs=0.05)  # measured: 0.453 against 0.429
    assert q["bf16"]["modes"] == pytest.approx(q["32"]["modes"], abs=1)
    assert q["bf16"]["mmd"] == pytest.approx(q["32"]["mmd"], rel=0.3)  # measured: 0.0121 against 0.0127


def test_fp16_trains_with_a_gradient_scaler_and_saves_it(tmp_path):
    train_base(tiny_base_cfg(steps=20, precision="fp16"), tmp_path / "base", quiet=True)
    losses = [r["loss"] for r in metric_lines(tmp_path / "base")]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5])
    scaler = torch.load(latest_checkpoint(tmp_path / "base") / "state.pt", weights_only=True)["scaler"]
    assert 0 < scaler["scale"] <= 2.0 ** 16  # its state is saved (the scale backs off from 2¹⁶ on overflow)


def test_bf16_chains_keep_a_float32_state_and_gradient():
    amp = MixedPrecision(Precision.BF16, torch.device("cpu"))
    net = torch.nn.Linear(2, 1)
    energy = lambda x: 0.5 * (x ** 2).sum(1) + net(x).squeeze(1)  # noqa: E731
    start = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    with amp.sampling(SamplerKind.LANGEVIN):
        out = SamplerConfig(SamplerKind.LANGEVIN, 5, 1e-4).run(energy, start, torch.Generator().manual_seed(0))
        assert net(start).dtype == torch.bfloat16  # the energy itself is evaluated in bf16
    assert out.noise.dtype == torch.float32
    ref = SamplerConfig(SamplerKind.LANGEVIN, 5, 1e-4).run(energy, start, torch.Generator().manual_seed(0))
    moved, ref_moved = out.noise - start, ref.noise - start  # steps of size ~1e-2 survive: not rounded away
    torch.testing.assert_close(moved, ref_moved, rtol=0.05, atol=2e-4)
    with amp.sampling(SamplerKind.MALA):
        assert net(start).dtype == torch.float32  # the Metropolis test needs float32 energies
