"""The OOD scores that look past one likelihood: compressed sizes, the input-complexity score, the fitted
densities (order-invariant, components by BIC), the denoising errors of multiscale."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from test_debm import tiny_model
from tiltkit.metrics.ood import Score, combined_columns, needed_statistics, scores_from
from tiltkit.metrics.ood_features import (Compressor, FeatureDensity, compressed_bits, denoising_errors,
                                          multiscale_sigmas)


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
