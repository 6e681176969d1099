"""The OOD scores that look past one likelihood: compressed sizes, the input-complexity score, the fitted
densities (order-invariant, components by BIC), the denoising errors of multiscale."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from test_debm import tiny_model
from test_tilt import N_SE, POST_VAR, gen, linear_vae, linear_vae_data, mean_and_se
from test_tilt import gaussian_kl as kl_between
from tiltkit.generators import MLPVAE
from tiltkit.generators.conv_vae import ConvVAE
from tiltkit.metrics.ood import Score, combined_columns, fitted_features, needed_statistics, scores_from
from tiltkit.metrics.ood_features import (Compressor, FeatureDensity, compressed_bits, denoising_errors,
                                          elbo_terms, likelihood_regret, multiscale_sigmas)


def images() -> torch.Tensor:
    """Three 1×28×28 images of known compressibility: constant, two halves, uniform noise."""
    rng = np.random.default_rng(0)
    constant = np.full((1, 28, 28), 200, np.uint8)
    halves = constant.copy()
    halves[:, :, 14:] = 17
    noise = rng.integers(0, 256, (1, 28, 28), dtype=np.uint8)
    return torch.from_numpy(np.stack([constant, halves, noise]))


def test_compressed_sizes_of_constructed_images():
    x = images()
    raw = 28 * 28 * 8
    z = compressed_bits(x, Compressor.ZLIB)
    assert z.tolist() == [8 * len(zlib.compress(bytes(img.numpy().tobytes()), 9)) for img in x]
    assert z[0] < 8 * 30 and z[1] < 8 * 40  # a run of one byte, two runs: a few dozen bytes
    assert z[2] >= raw  # uniform noise does not compress: at least its 784 bytes
    png = compressed_bits(x, Compressor.PNG)
    assert png[0] < png[1] < png[2] and png[2] >= raw and png[0] < 8 * 100
    rgb = torch.from_numpy(np.repeat(x.numpy(), 3, axis=1))
    assert (compressed_bits(rgb) > png).all()  # three channels to store
    with pytest.raises(ValueError, match="uint8"):
        compressed_bits(x.float())


def test_the_complexity_score_adds_the_bits_in_nats_to_the_log_density():
    stats = {"elbo": np.array([-100.0, -50.0]), "energy": np.array([2.0, -3.0]), "bits": np.array([800.0, 80.0])}
    plain = scores_from(stats, [Score.COMPLEXITY], [Score.ELBO, Score.COMPLEXITY])[Score.COMPLEXITY]
    np.testing.assert_allclose(plain, [-100 + 800 * math.log(2), -50 + 80 * math.log(2)])
    tilted = scores_from(stats, [Score.COMPLEXITY], [Score.ELBO, Score.ENERGY, Score.TILTED])[Score.COMPLEXITY]
    np.testing.assert_allclose(tilted, plain - stats["energy"])  # log p = ELBO − E(x) for a tilted model
    assert needed_statistics([Score.COMPLEXITY], [Score.ELBO, Score.TILTED]) == {"elbo", "energy", "bits"}
    # the noise image: likely under a model that gives noise log p ≈ −raw bits (ln 2 each), but its score is ≈ 0
    x = images()
    bits = compressed_bits(x)
    log_p = -bits * math.log(2)  # a model no better than the compressor
    score = scores_from({"elbo": log_p, "bits": bits}, [Score.COMPLEXITY], [Score.ELBO])[Score.COMPLEXITY]
    np.testing.assert_allclose(score, 0.0, atol=1e-9)


def test_the_mixture_does_not_depend_on_the_order_of_the_training_images():
    rng = np.random.default_rng(1)
    f = np.concatenate([rng.normal(0, 1, (300, 3)), rng.normal(6, 0.5, (200, 3))])
    probe = rng.normal(2, 3, (50, 3))
    a = FeatureDensity(f).log_density(probe)
    b = FeatureDensity(f[rng.permutation(len(f))]).log_density(probe)
    np.testing.assert_array_equal(a, b)


def test_bic_picks_the_components_and_the_density_is_the_gaussian_s():
    rng = np.random.default_rng(2)
    gaussian = rng.normal(0, 1, (4000, 2))
    density = FeatureDensity(gaussian)
    assert density.components == 1
    z = np.array([[0.0, 0.0], [1.0, -1.0], [3.0, 0.5]])
    exact = -0.5 * ((z - density.mean) / density.std) ** 2 - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(density.log_density(z), exact.sum(1), atol=0.05)
    two = np.concatenate([rng.normal(-4, 1, (500, 2)), rng.normal(4, 1, (500, 2))])
    assert FeatureDensity(two).components == 2
    with pytest.raises(ValueError, match="NaN"):
        FeatureDensity(np.full((100, 2), np.nan))


def test_denoising_errors_are_the_log_mean_squared_errors_at_each_sigma():
    m = tiny_model()
    x = torch.rand(4, *m.data_shape) * 2 - 1
    sigmas = multiscale_sigmas(m.sigmas, 3)
    assert sigmas[0].item() == pytest.approx(m.sigmas.max().item()) and len(sigmas) == 3
    got = denoising_errors(m, x, sigmas, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    for j, s in enumerate(sigmas):
        eps = torch.randn(x.shape, generator=g)
        with torch.no_grad():
            r = m.denoise(x + s * eps, s.expand(4))
        torch.testing.assert_close(got[:, j], (x - r).pow(2).flatten(1).mean(1).log())
    assert combined_columns([Score.TEXTURE, Score.MULTISCALE, Score.COMBINED]) == ["bits", "errors", "code"]


@pytest.mark.parametrize("make", [lambda: MLPVAE(data_dim=3, latent_dim=2, hidden=8),
                                  lambda: ConvVAE((1, 28, 28), latent_dim=4, width=4)], ids=["mlp", "conv"])
def test_a_vaes_elbo_terms_add_up_to_its_elbo(make):
    """combined models a VAE's ELBO as its two terms: with the same z, −rec − kl is the ELBO, and kl the closed
    form of KL(q(z | x) ‖ N(0, I)) (it does not depend on the draw)."""
    torch.manual_seed(0)
    vae = make().eval()
    x = torch.rand(5, *vae.data_shape)
    with torch.no_grad():
        rec, kl = elbo_terms(vae, x, torch.Generator().manual_seed(1)).T
        elbo = vae.log_likelihood(x, torch.Generator().manual_seed(1))
        kl_other_draw = elbo_terms(vae, x, torch.Generator().manual_seed(2))[:, 1]
    torch.testing.assert_close(-rec - kl, elbo)
    torch.testing.assert_close(kl, kl_other_draw)
    assert (kl > 0).all()
    vae_offers = [Score.ELBO, Score.IWAE, Score.REGRET, Score.COMPLEXITY, Score.COMBINED]
    assert combined_columns(vae_offers) == ["terms", "regret", "bits"]
    assert combined_columns(vae_offers + [Score.ENERGY, Score.TILTED]) == ["terms", "regret", "energy", "bits"]
    assert combined_columns([Score.ELBO, Score.COMBINED]) == ["elbo", "bits"]  # a flow: its log-likelihood
    stats = {"terms": np.stack([-elbo.numpy(), np.zeros(5)], 1), "regret": np.zeros(5), "bits": np.ones(5)}
    assert fitted_features(stats, Score.COMBINED, vae_offers).shape == (5, 4)


def test_likelihood_regret_is_the_encoders_gap_on_a_linear_vae():
    """Linear-Gaussian VAE whose exact posterior is diagonal: max_q ELBO = log p(x), so the regret of an encoder
    off by (0.3 in the mean, 0.7 in the log-variance) is KL(q ‖ p(z | x)) = 1.17 nats for every x, and 0 for
    the exact encoder. The per-image fit may fall short of the optimum, never past it (on average)."""
    x = linear_vae_data(500, seed=40)
    offset = linear_vae(0.3, 0.7)
    gap = float(kl_between(torch.full((2,), 0.3, dtype=torch.float64), POST_VAR * math.exp(0.7),
                           torch.zeros(2, dtype=torch.float64), POST_VAR))
    regret = likelihood_regret(offset, x, gen(41), steps=200, lr=0.02)
    m, se = mean_and_se(regret)
    assert 0.95 * gap < m < gap + N_SE * se, f"regret {m:.4f} ± {se:.4f}, encoder gap {gap:.4f}"
    exact = likelihood_regret(linear_vae(), x, gen(42), steps=200, lr=0.02)
    m, se = mean_and_se(exact)
    assert m < N_SE * se and m > -0.05 * gap, f"regret of the exact encoder {m:.4f} ± {se:.4f}"
    assert all(p.grad is None for p in offset.parameters())  # the VAE's weights are not touched


