"""VAEBM (chains over (ε_z, ε_x)), the joint energy E(x, z), weight norm, and the pixel EBM.

Closed form: a linear VAE with pixel noise, x = o + M·ε with ε = (ε_z, ε_x) ~ N(0, I₅),
M = diag(scale)·[W, σI] and o = shift + scale·b₀ (test_tilt.linear_vae), tilted by the
quadratic E(x) = ½(x − c)ᵀP(x − c). Then U(ε) = ½‖ε‖² + E(o + Mε) is Gaussian in ε with

    precision Λ = I + MᵀPM,   mean μ = −Λ⁻¹MᵀP(o − c),

and a joint energy E(x) + ½zᵀQz (z = ε_z) adds Q to the ε_z block of Λ. MALA and HMC must
both return N(μ, Λ⁻¹) over the pair (so they agree with each other); tolerances as in test_tilt.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import sets
from test_image_pipeline import squares
from test_tilt import N_CHAINS, SCALE, SHIFT, SIGMA, B0, W, QuadraticEnergy, assert_gaussian, gen, linear_vae
from tiltkit import TiltedModel
from tiltkit.cli import main
from tiltkit.energies import ConvEnergy, JointConvEnergy, SmallConvEnergy
from tiltkit.energies.spectral import spectral_penalty, top_singular_value, weight_matrices
from tiltkit.samplers import SamplerConfig, SamplerKind
from tiltkit import load
from tiltkit.training.checkpoint import latest_checkpoint

F64 = torch.float64
C = torch.tensor([0.5, 1.0, -2.0], dtype=F64)
P = torch.diag(torch.tensor([0.5, 2.0, 0.3], dtype=F64))
Q = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
M = torch.diag(SCALE) @ torch.cat([W, SIGMA * torch.eye(3, dtype=F64)], 1)  # (3, 5)
O = SHIFT + SCALE * B0


def closed_form(joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of the tilted law over ε = (ε_z, ε_x), (5,) and (5, 5)."""
    precision = torch.eye(5, dtype=F64) + M.T @ P @ M
    if joint:
        precision[:2, :2] += Q
    return -torch.linalg.solve(precision, M.T @ P @ (O - C)), torch.linalg.inv(precision)


class JointQuadratic(nn.Module):
    """E(x, z) = ½(x − c)ᵀP(x − c) + ½zᵀQz."""

    joint = True
    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.x_part = QuadraticEnergy(C, P)

    def forward(self, x, z):
        return self.x_part(x) + 0.5 * ((z @ Q) * z).sum(1)


def vaebm_model(joint: bool) -> TiltedModel:
    vae = linear_vae()
    vae.pixel_noise = True
    return TiltedModel(vae, JointQuadratic() if joint else QuadraticEnergy(C, P).double())


# λ_max(Λ) ≈ 5.9 (6.9 joint). MALA η = 0.25: η·λ_max/2 ≈ 0.86, the slowest direction (λ = 1) contracts by
# 0.875 per accepted step, so 200 steps forget the start. HMC h = 0.3, L = 3: 0.9 to 2.4 rad per iteration.
SAMPLERS = {
    "mala": SamplerConfig(SamplerKind.MALA, steps=200, step_size=0.25),
    "hmc": SamplerConfig(SamplerKind.HMC, steps=150, step_size=0.3, n_leapfrog=3),
}


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("joint", [False, True])
def test_vaebm_sampling_matches_closed_form_in_eps_z_eps_x(kind, joint):
    model = vaebm_model(joint)
    result = model.sample(SAMPLERS[kind], N_CHAINS, gen(11))
    eps_z, eps_x = result.noise
    assert eps_z.shape == (N_CHAINS, 2) and eps_x.shape == (N_CHAINS, 3)
    assert 0.5 < result.acceptance_rate <= 1.0
    mean, cov = closed_form(joint)
    assert_gaussian(torch.cat([eps_z, eps_x], 1), mean, cov)
    if joint:  # the z term is real: the x-only law is rejected
        with pytest.raises(AssertionError):
            assert_gaussian(torch.cat([eps_z, eps_x], 1), *closed_form(False))


def test_use_mu_outputs_the_decoder_mean():
    model = vaebm_model(joint=False)
    noise = model.sample_noise(7, gen(0))
    with torch.no_grad():
        mean = SHIFT + SCALE * (noise[0] @ W.T + B0)
        torch.testing.assert_close(model.output(noise), O + noise[0] @ M[:, :2].T + noise[1] @ M[:, 2:].T)
        model.use_mu = True
        torch.testing.assert_close(model.output(noise), mean)


def test_joint_energy_on_data_draws_z_from_the_encoder():
    vae = linear_vae()
    model = TiltedModel(vae, JointQuadratic())
    x = torch.randn(6, 3, generator=gen(1), dtype=F64)
    z = vae.encode(x, gen(2))
    torch.testing.assert_close(model.data_energy(x, gen(2)), model.energy(x, z))
    with pytest.raises(ValueError, match="needs a base with a latent"):
        TiltedModel(nn.Identity(), JointQuadratic())


# --------------------------------------------------------------------------------------
# Weight normalization with data-dependent init (Salimans & Kingma 2016)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: ConvEnergy((1, 16, 16), channels=(8, 16), blocks=1, weight_norm=True),
    lambda: SmallConvEnergy((1, 16, 16), width=8, weight_norm=True),
])
def test_data_dependent_init_standardizes_every_layer(make):
    energy = make()
    x = torch.rand(128, 1, 16, 16, generator=gen(3))
    layers = [m for m in energy.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    energy.data_init(x)
    outs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outs.append(out)) for m in layers]
    with torch.no_grad():
        e = energy(x)
    for h in hooks:
        h.remove()
    for out in outs:  # every pre-activation: mean 0, std 1 per channel on the init batch
        dims = [0] + list(range(2, out.dim()))
        torch.testing.assert_close(out.mean(dims), torch.zeros(out.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(out.std(dims), torch.ones(out.shape[1]), atol=1e-4, rtol=0)
    assert abs(float(e.mean())) < 1e-4 and abs(float(e.std()) - 1) < 1e-4


def test_weight_norm_and_spectral_norm_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        SmallConvEnergy((1, 16, 16), weight_norm=True, spectral_norm=True)


def test_spectral_penalty_is_the_sum_of_top_singular_values_with_their_gradient():
    energy = SmallConvEnergy((1, 16, 16), width=4, weight_norm=True)
    energy.data_init(torch.rand(32, 1, 16, 16, generator=gen(4)))
    mats = weight_matrices(energy)
    assert [tuple(m.shape) for m in mats] == [(4, 9), (8, 36), (16, 72), (1, 16)]  # effective weights, (out, in·k·k)
    exact = sum(torch.linalg.matrix_norm(m.detach().double(), ord=2) for m in mats)
    penalty = spectral_penalty(energy, iterations=200)
    assert penalty.item() == pytest.approx(exact.item(), rel=1e-5)
    # ∂σ_max/∂W = u₁v₁ᵀ: the gradient matches autograd through the exact singular values
    w = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    (g_power,) = torch.autograd.grad(top_singular_value(w, iterations=500), w)
    (g_exact,) = torch.autograd.grad(torch.linalg.svdvals(w)[0], w)
    torch.testing.assert_close(g_power, g_exact, rtol=1e-6, atol=1e-8)


def test_joint_conv_energy_checks_z():
    energy = JointConvEnergy((1, 16, 16), latent_dim=4, width=4, hidden=8)
    x, z = torch.rand(3, 1, 16, 16), torch.randn(3, 4)
    assert energy(x, z).shape == (3,)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        energy(x, torch.randn(3, 5))


# --------------------------------------------------------------------------------------
# Tiny runs through the command line: VAEBM (resume with its ε-space buffer), joint + HMC, pixel EBM
# --------------------------------------------------------------------------------------
GAUSSIAN_VAE = {"model_kwargs": {"latent_dim": 8, "width": 8, "likelihood": "gaussian"}, "batch_size": 32,
                "checkpoint_every": 10}
VAEBM = {"energy": "conv-small", "energy_kwargs": {"width": 4, "weight_norm": True}, "pixel_noise": True,
         "use_mu": True, "persistent": True, "buffer_size": 64, "replay_max": 0.6, "replay_anneal_steps": 4,
         "betas": [0.99, 0.999], "weight_decay": 3e-5, "alpha": 0.0, "spectral_reg": 0.2, "batch_size": 16,
         "checkpoint_every": 3,
         "train_sampler": {"kind": "langevin", "steps": 3, "step_size": 1e-4},
         "sample_sampler": {"kind": "langevin", "steps": 5, "step_size": 1e-4}, "compile": "off"}


@pytest.fixture(scope="module")
def data_and_vae(tmp_path_factory):
    root = tmp_path_factory.mktemp("vaebm")
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = squares(160, rng), squares(80, rng)
    np.savez(root / "squares.npz", x=x, y=y, x_test=xt, y_test=yt)
    assert main(["train", "base", "--data", str(root / "squares.npz"), "--model", "conv-vae", "--out",
                 str(root / "vae"), "--steps", "10", "--device", "cpu", "--quiet", *sets(GAUSSIAN_VAE)]) == 0
    return root


def metric_lines(run):
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_vaebm_resume_with_eps_buffer_equals_uninterrupted(data_and_vae, monkeypatch):
    from test_training import crash_at

    root = data_and_vae
    args = ["train", "tilt", "--base", str(root / "vae"), "--steps", "7", "--quiet", *sets(VAEBM)]
    assert main([*args, "--out", str(root / "full")]) == 0
    with monkeypatch.context() as m:
        crash_at(m, 5)  # checkpoint at 3, the crash loses 4
        assert main([*args, "--out", str(root / "crashed")]) == 130  # "interrupted; resume with --resume"
    assert main(["train", "tilt", "--out", str(root / "crashed"), "--resume", "--quiet"]) == 0
    full, crashed = (torch.load(latest_checkpoint(root / r) / "state.pt", weights_only=True) for r in ("full", "crashed"))
    assert len([k for k in full["ranks"][0]["buffer"] if k.startswith("store_")]) == 2  # (ε_z, ε_x)
    for key in ("store_0", "store_1"):
        torch.testing.assert_close(full["ranks"][0]["buffer"][key], crashed["ranks"][0]["buffer"][key], rtol=0, atol=0)
    wa, wb = load(root / "full", device="cpu").model.state_dict(), load(root / "crashed", device="cpu").model.state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    lines = metric_lines(root / "full")
    assert lines == metric_lines(root / "crashed")
    # replay probability annealed linearly up to replay_max = 0.6 over 4 steps, then held
    assert [r["replay"] for r in lines] == pytest.approx([0.15, 0.3, 0.45, 0.6, 0.6, 0.6, 0.6])


def test_vaebm_run_samples_decoder_means(data_and_vae, tmp_path):
    root = data_and_vae
    assert main(["train", "tilt", "--base", str(root / "vae"), "--out", str(tmp_path / "t"), "--steps", "2",
                 "--quiet", *sets(VAEBM)]) == 0
    model = load(tmp_path / "t", device="cpu").model
    assert model.use_mu and model.base.pixel_noise and isinstance(model.sample_noise(2), tuple)
    out = tmp_path / "s.npz"
    assert main(["sample", str(tmp_path / "t"), "--n", "6", "--out", str(out), "--device", "cpu"]) == 0
    x = np.load(out)["x"]
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.uint8
    for flag in (["--trajectory", "--every", "2"], ["--compare-base"]):  # pictures of decoder means, too
        png = tmp_path / f"{flag[0][2:]}.png"
        assert main(["sample", str(tmp_path / "t"), "--n", "4", *flag, "--out", str(png), "--device", "cpu"]) == 0
        assert png.stat().st_size > 0


def test_joint_energy_with_hmc_run(data_and_vae, tmp_path):
    root = data_and_vae
    joint = {**VAEBM, "energy": "conv-small-joint", "energy_kwargs": {"latent_dim": 8, "width": 4, "hidden": 8},
             "persistent": False, "train_sampler": {"kind": "hmc", "steps": 1, "step_size": 0.01, "n_leapfrog": 3},
             "sample_sampler": {"kind": "hmc", "steps": 2, "step_size": 0.01, "n_leapfrog": 3}}
    assert main(["train", "tilt", "--base", str(root / "vae"), "--out", str(tmp_path / "j"), "--steps", "3",
                 "--quiet", *sets(joint)]) == 0
    lines = metric_lines(tmp_path / "j")
    assert all(0 <= r["accept"] <= 1 and np.isfinite(r["loss"]) for r in lines)
    bad = {**joint, "energy_kwargs": {"latent_dim": 3}}
    assert main(["train", "tilt", "--base", str(root / "vae"), "--out", str(tmp_path / "bad"), *sets(bad)]) == 2


def test_vaebm_needs_a_gaussian_decoder(data_and_vae, tmp_path, capsys):
    root = data_and_vae
    assert main(["train", "base", "--data", str(root / "squares.npz"), "--model", "conv-vae", "--out",
                 str(tmp_path / "bern"), "--steps", "1", "--quiet",
                 *sets({"model_kwargs": {"latent_dim": 4, "width": 4}})]) == 0
    assert main(["train", "tilt", "--base", str(tmp_path / "bern"), "--out", str(tmp_path / "t"),
                 *sets({**VAEBM, "energy_kwargs": {"width": 4}})]) == 2
    assert "Gaussian decoder" in capsys.readouterr().err


PIXEL_EBM = {"energy": "conv-small", "energy_kwargs": {"width": 4, "spectral_norm": True}, "persistent": True,
             "buffer_size": 64, "reinit_prob": 0.05, "alpha": 1.0, "batch_size": 16, "checkpoint_every": 5,
             "train_sampler": {"kind": "langevin", "steps": 5, "step_size": 20, "noise_scale": 0.005,
                               "clamp": [0, 1]},
             "sample_sampler": {"kind": "langevin", "steps": 10, "step_size": 20, "noise_scale": 0.005,
                                "clamp": [0, 1]}}


def test_pixel_ebm_run_keeps_chains_in_the_box(data_and_vae, tmp_path, capsys):
    root = data_and_vae
    assert main(["train", "tilt", "--base", "none", "--data", str(root / "squares.npz"), "--out",
                 str(tmp_path / "pix"), "--steps", "5", "--quiet", *sets(PIXEL_EBM)]) == 0
    run = load(tmp_path / "pix", device="cpu")
    cfg, model = run.cfg, run.model
    assert type(model.base).__name__ == "PixelBox" and model.base.bounds == (0.0, 1.0)
    state = torch.load(latest_checkpoint(tmp_path / "pix") / "state.pt", weights_only=True)
    store = state["ranks"][0]["buffer"]["store_0"]
    assert store.min() >= 0 and store.max() <= 1 and store.shape == (64, 1, 28, 28)
    x = model.sample(cfg.sample_sampler, 8, gen(0)).noise
    assert x.min() >= 0 and x.max() <= 1
    assert main(["sample", str(tmp_path / "pix"), "--n", "4", "--out", str(tmp_path / "p.png")]) == 0
    # no data: one clear line
    assert main(["train", "tilt", "--base", "none", "--out", str(tmp_path / "bad")]) == 2
    assert "needs data" in capsys.readouterr().err
