"""Denoising-EBM: the σ ladder, the energies against closed forms and finite differences, Algorithm 1's
update signs, and a tiny run end to end (train, resume, sample, trajectory, OOD)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import sets
from test_image_pipeline import squares
from test_training import crash_at, metric_lines

from tiltkit.cli import main
from tiltkit.denoising import SIGMA_DATA, DenoisingEBM, geometric_sigmas
from tiltkit.precision import MixedPrecision, Precision
from tiltkit.samplers import SamplerConfig
from tiltkit import load

SHAPE = (1, 16, 16)
TINY = {"width": 8, "latent_dim": 8, "decoder_width": 8, "n_sigmas": 16}


def tiny_model(seed: int = 0, dtype=torch.float32) -> DenoisingEBM:
    torch.manual_seed(seed)
    return DenoisingEBM(SHAPE, **TINY).to(dtype)


def test_geometric_ladder_runs_from_sigma_max_to_sigma_min_with_a_constant_ratio():
    s = geometric_sigmas(1.0, 0.01, 128)
    assert s.shape == (128,) and s[0].item() == pytest.approx(1.0) and s[-1].item() == pytest.approx(0.01)
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.01 ** (1 / 127)))
    for bad in [(0.01, 1.0, 8), (1.0, 0.0, 8), (1.0, 0.1, 1)]:
        with pytest.raises(ValueError):
            geometric_sigmas(*bad)


def test_draw_sigmas_uses_every_level_of_the_ladder():
    m = tiny_model()
    drawn = m.draw_sigmas(4000, torch.Generator().manual_seed(0))
    counts = torch.stack([(drawn == s).sum() for s in m.sigmas])
    assert counts.sum() == 4000 and counts.min() > 4000 / 16 * 0.7


def test_untrained_dae_is_the_optimal_denoiser_of_gaussian_data():
    """F starts at zero, so r(x̃, σ) = c_skip·x̃ = σ_d²/(σ² + σ_d²)·x̃: the posterior mean E[x | x̃] of
    x ~ N(0, σ_d² I), with mean squared error σ²σ_d²/(σ² + σ_d²) per pixel."""
    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    sigma = torch.full((4000,), 0.7)
    x = SIGMA_DATA * torch.randn(4000, *SHAPE, generator=g)
    x_tilde = x + 0.7 * torch.randn(x.shape, generator=g)
    r = m.denoise(x_tilde, sigma)
    torch.testing.assert_close(r, SIGMA_DATA ** 2 / (0.49 + SIGMA_DATA ** 2) * x_tilde)
    mse = (r - x).pow(2).mean().item()
    assert mse == pytest.approx(0.49 * SIGMA_DATA ** 2 / (0.49 + SIGMA_DATA ** 2), rel=0.02)


def test_texture_energy_of_a_perfect_denoiser_is_zero_on_its_fixed_points(monkeypatch):
    """Data = one image x*: the optimal denoiser maps every x̃ to x*, so U_c(x*) = 0 and elsewhere
    U_c(x) = ‖x − x*‖²/(2σ²), whatever the noise."""
    m = tiny_model()
    x_star = torch.rand(1, *SHAPE) * 2 - 1
    monkeypatch.setattr(m, "denoise", lambda x_tilde, sigma: x_star.expand_as(x_tilde))
    g = torch.Generator().manual_seed(1)
    sigma = torch.tensor([0.05, 0.3, 1.0])
    assert m.texture_energy(x_star.expand(3, *SHAPE), sigma, generator=g).abs().max().item() == 0.0
    x = torch.rand(3, *SHAPE) * 2 - 1
    expected = (x - x_star).flatten(1).pow(2).sum(1) / (2 * sigma ** 2)
    torch.testing.assert_close(m.texture_energy(x, sigma, generator=g), expected)


def test_semantic_energy_is_the_texture_energy_of_the_semantic_image():
    m = tiny_model()
    z, sigma = torch.randn(3, 8), torch.tensor([0.1, 0.5, 1.0])
    eps = torch.randn(3, *SHAPE)
    torch.testing.assert_close(m.semantic_energy(z, sigma, eps), m.texture_energy(m.decode(z), sigma, eps))


def test_energy_gradients_match_finite_differences():
    m = tiny_model(dtype=torch.float64)
    for p in m.dae.head.parameters():  # a trained-looking DAE: F no longer zero
        torch.nn.init.normal_(p, std=0.1)
    g = torch.Generator().manual_seed(2)
    x, z = torch.rand(2, *SHAPE, dtype=torch.float64) * 2 - 1, torch.randn(2, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.4], dtype=torch.float64)
    eps = torch.randn(2, *SHAPE, generator=g, dtype=torch.float64)
    for energy, point in ((m.texture_energy, x), (m.semantic_energy, z)):
        v = point.clone().requires_grad_(True)
        grad = torch.autograd.grad(energy(v, sigma, eps).sum(), v)[0]
        direction = torch.randn(point.shape, generator=g, dtype=torch.float64)
        h = 1e-5
        fd = (energy(point + h * direction, sigma, eps) - energy(point - h * direction, sigma, eps)) / (2 * h)
        torch.testing.assert_close((grad * direction).flatten(1).sum(1), fd, rtol=1e-6, atol=1e-6)


def test_contrastive_update_lowers_data_energy_relative_to_samples_and_routes_gradients():
    """Algorithm 1, lines 14–18 on a toy case: one small Adam step widens both energy gaps
    (E(samples) − E(data)), the semantic loss moves γ only and the texture loss φ only."""
    m = tiny_model()
    for p in m.dae.head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(16, *SHAPE, generator=g) > 0.5).float() * 2 - 1
    x_neg, z_neg = torch.rand(16, *SHAPE, generator=g) * 2 - 1, torch.randn(16, 8, generator=g)
    sigma = m.draw_sigmas(16, g)
    phi, gamma = list(m.dae.parameters()), list(m.decoder.parameters())

    def gaps():
        torch.manual_seed(0)  # the same ε draws before and after the update
        return m.contrastive_losses(x, sigma, z_neg, x_neg, torch.Generator().manual_seed(4))[2]

    before = gaps()
    sem, tex, _ = m.contrastive_losses(x, sigma, z_neg, x_neg, torch.Generator().manual_seed(4))
    phi0, gamma0 = [p.detach().clone() for p in phi], [p.detach().clone() for p in gamma]
    step = MixedPrecision(Precision.FP32, torch.device("cpu")).step
    step(torch.optim.Adam(m.parameters(), lr=1e-4), [(sem, gamma)], None)
    assert all(torch.equal(a, b) for a, b in zip(phi0, phi)), "the semantic loss changed φ"
    assert any(not torch.equal(a, b) for a, b in zip(gamma0, gamma))
    sem, tex, _ = m.contrastive_losses(x, sigma, z_neg, x_neg, torch.Generator().manual_seed(4))
    gamma1 = [p.detach().clone() for p in gamma]
    step(torch.optim.Adam(m.parameters(), lr=1e-4), [(tex, phi)], None)
    assert all(torch.equal(a, b) for a, b in zip(gamma1, gamma)), "the texture loss changed γ"
    after = gaps()
    assert after["semantic_gap"] > before["semantic_gap"]
    assert after["texture_gap"] > before["texture_gap"]


def test_contrastive_losses_are_per_pixel_energy_gaps_plus_the_alpha_penalty():
    m = tiny_model()
    g = torch.Generator().manual_seed(6)
    x, x_neg = torch.rand(4, *SHAPE, generator=g) * 2 - 1, torch.rand(4, *SHAPE, generator=g) * 2 - 1
    z_neg, sigma, d = torch.randn(4, 8, generator=g), m.sigmas[[0, 3, 7, 15]], 16 * 16
    sem0, tex0, u = m.contrastive_losses(x, sigma, z_neg, x_neg, torch.Generator().manual_seed(1))
    torch.testing.assert_close(sem0.item(), (u["us_pos"] - u["us_neg"]) / d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tex0.item(), (u["uc_pos"] - u["uc_neg"]) / d, rtol=1e-5, atol=1e-6)
    _, tex, _ = m.contrastive_losses(x, sigma, z_neg, x_neg, torch.Generator().manual_seed(1), alpha=0.5)
    eps = torch.Generator().manual_seed(1)  # its draws in order: the code's ε, U_s⁺'s, U_s⁻'s, U_c⁺'s, U_c⁻'s
    draws = [torch.randn(x.shape, generator=eps) for _ in range(5)]
    uc_pos, uc_neg = m.texture_energy(x, sigma, draws[3]) / d, m.texture_energy(x_neg, sigma, draws[4]) / d
    expected = uc_pos.mean() - uc_neg.mean() + 0.5 * (uc_pos.pow(2) + uc_neg.pow(2)).mean()
    torch.testing.assert_close(tex, expected)


def test_two_stage_sample_starts_the_pixel_stage_at_the_semantic_image():
    m = tiny_model()
    g = torch.Generator().manual_seed(5)
    latent, pixel = SamplerConfig("langevin", 4, 0.2), SamplerConfig("langevin", 3, 0.02, clamp=(-1.0, 1.0))
    out = m.sample(6, latent, pixel, g, sigma=0.3, return_trajectory=True, every=1)
    assert out.x.shape == (6, *SHAPE) and out.z.shape == (6, 8) and out.sigma.tolist() == pytest.approx([0.3] * 6)
    torch.testing.assert_close(out.semantic, m.decode(out.z).detach())
    assert len(out.trajectory) == (4 + 1) + 3  # h(z_0..z_4), then x_1..x_3
    torch.testing.assert_close(out.trajectory[4], out.semantic)
    torch.testing.assert_close(out.trajectory[-1], out.x)
    assert out.x.abs().max() <= 1.0


DEBM = {"steps": 4, "pretrain_steps": 1, "batch_size": 8, "recon_steps": 2, "checkpoint_every": 2, "lr": 1e-3,
        "model_kwargs": {"width": 8, "latent_dim": 8, "decoder_width": 8, "n_sigmas": 8},
        "latent_sampler": {"kind": "langevin", "steps": 3, "step_size": 0.2},
        "pixel_sampler": {"kind": "langevin", "steps": 3, "step_size": 0.02, "clamp": [-1, 1]},
        "sample_latent_sampler": {"kind": "langevin", "steps": 3, "step_size": 0.2},
        "sample_pixel_sampler": {"kind": "langevin", "steps": 4, "step_size": 0.02, "clamp": [-1, 1]},
        "sample_sigma": 0.1, "device": "cpu"}


@pytest.fixture(scope="module")
def squares_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("debm")
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = squares(96, rng), squares(48, rng)
    np.savez(root / "squares.npz", x=x, y=y, x_test=xt, y_test=yt)
    return root


def test_debm_run_end_to_end_and_resume_equals_uninterrupted(squares_file, tmp_path, monkeypatch, capsys):
    data = str(squares_file / "squares.npz")
    args = ["train", "debm", "--data", data, "--quiet", *sets(DEBM)]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    with monkeypatch.context() as mp:
        crash_at(mp, 3)  # checkpoint at 2, the crash loses 3
        assert main([*args, "--out", str(tmp_path / "crashed")]) == 130
    assert main(["train", "debm", "--out", str(tmp_path / "crashed"), "--resume", "--quiet"]) == 0
    wa, wb = (load(tmp_path / r, device="cpu").model.state_dict() for r in ("full", "crashed"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    lines = metric_lines(tmp_path / "full")
    assert lines == metric_lines(tmp_path / "crashed") and [r["step"] for r in lines] == [1, 2, 3, 4]
    assert set(lines[0]) == {"step", "dae_loss", "dec_loss", "loss", "grad_norm"}  # pretraining: reconstruction only
    assert {"dae_loss", "dec_loss", "us_pos", "us_neg", "uc_pos", "uc_neg", "grad_norm"} <= set(lines[1])

    run = tmp_path / "full"
    assert main(["sample", str(run), "--n", "5", "--out", str(tmp_path / "s.npz")]) == 0
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8
    for flag in ("--trajectory", "--compare-base"):
        assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / f"{flag[2:]}.png"), flag]) == 0
        assert (tmp_path / f"{flag[2:]}.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["ood", str(run), "--ood", "uniform,interp", "--n", "24", "--out", str(tmp_path / "ood")]) == 0
    report = json.loads((tmp_path / "ood" / "ood.json").read_text())
    assert report["scores"] == ["texture", "multiscale", "combined"]
    assert 0.0 <= report["results"]["uniform"]["texture"]["auroc"] <= 1.0
    assert math.isfinite(report["results"]["interp"]["texture"]["auroc"])
    assert main(["sample", str(run), "--n", "3", "--steps", "5", "--out", str(tmp_path / "bad.npz")]) == 2
