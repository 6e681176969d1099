"""Toy data sets and toy metrics, checked against values known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from tiltkit.data.toy import GAUSS25_SIGMA, TOY_SETS, gauss25_centres, load_points, toy_split
from tiltkit.errors import UserError
from tiltkit.metrics import emd, mmd2, mode_metrics, toy_metrics


def test_25gaussians_matches_the_DOT_setting():
    centres = gauss25_centres()
    assert centres.shape == (25, 2)
    np.testing.assert_allclose(np.unique(centres[:, 0]), np.array([-4, -2, 0, 2, 4]) / 2.828)
    x = TOY_SETS["25gaussians"](50_000, np.random.default_rng(0))
    residual = x - centres[np.argmin(((x[:, None] - centres) ** 2).sum(-1), 1)]
    np.testing.assert_allclose(residual.std(0), 0.05 / 2.828, rtol=0.02)


def test_data_itself_scores_as_the_gaussian_radius_law():
    # For 2-D N(0, σ²I) the radius r satisfies P(r ≤ kσ) = 1 − exp(−k²/2): 0.98889 (3σ), 0.99966 (4σ).
    x = TOY_SETS["25gaussians"](20_000, np.random.default_rng(1))
    m = mode_metrics(x, gauss25_centres(), GAUSS25_SIGMA)
    assert m["modes"] == 25
    se = np.sqrt(0.989 * 0.011 / len(x))
    assert abs(m["hq"] - (1 - np.exp(-4.5))) < 4 * se
    assert m["hq4"] > 0.998


def test_swissroll_scaling():
    x = TOY_SETS["swissroll"](10_000, np.random.default_rng(0))
    # make_swiss_roll's t ∈ [1.5π, 4.5π]; x = t·cos t, z = t·sin t, so |coords| ≤ 4.5π/7.5 + noise.
    assert np.abs(x).max() < 4.5 * np.pi / 7.5 + 0.2
    assert np.abs(x).max() > 1.5


def test_mmd_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2))
    same = mmd2(a, b, bandwidths=(1.0,))
    shifted = mmd2(a + 1.0, b, bandwidths=(1.0,))
    # closed form for a shift δ between two N(0, I) with kernel width h: 2(h²/(h²+2))^{d/2}(1 − exp(−δ²/(2(h²+2))))
    expected = 2 * (1 / 3) * (1 - np.exp(-2 / 6))
    assert abs(same) < 0.005
    assert abs(shifted - expected) < 0.02


def test_emd_of_a_translation_is_its_length():
    x = np.random.default_rng(0).uniform(size=(300, 2)) * 0.01
    assert emd(x + np.array([3.0, 4.0]), x) == pytest.approx(5.0, abs=0.02)


def test_toy_metrics_keys():
    train, test = toy_split("25gaussians", n_train=1000, n_test=500)
    assert set(toy_metrics(train[:500], test, "25gaussians")) == {"modes", "hq", "hq4", "mmd", "emd"}
    assert set(toy_metrics(train[:500], test, "swissroll")) == {"mmd", "emd"}


def test_toy_split_is_fixed_and_disjoint():
    a_train, a_test = toy_split("moons", n_train=500, n_test=100)
    b_train, _ = toy_split("moons", n_train=500, n_test=100)
    np.testing.assert_array_equal(a_train, b_train)
    assert not np.isin(a_test[:, 0], a_train[:, 0]).any()


@pytest.mark.parametrize("name", sorted(TOY_SETS))
def test_every_toy_set_is_finite_2d(name):
    x = TOY_SETS[name](500, np.random.default_rng(0))
    assert x.shape == (500, 2) and np.isfinite(x).all() and x.std(0).min() > 0.1


def test_user_files(tmp_path):
    pts = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    np.save(tmp_path / "p.npy", pts)
    np.savetxt(tmp_path / "p.csv", pts, delimiter=",", header="a,b,c", comments="")
    np.testing.assert_allclose(load_points(tmp_path / "p.npy"), pts)
    np.testing.assert_allclose(load_points(tmp_path / "p.csv"), pts, rtol=1e-6)
    train, test = toy_split(str(tmp_path / "p.npy"))
    assert len(train) == 90 and len(test) == 10


@pytest.mark.parametrize("content, message", [
    (np.zeros((4, 2, 2)), "expected rank 2"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
    (np.zeros((0, 2)), "at least 2 rows"),
])
def test_bad_user_files(tmp_path, content, message):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(UserError, match=message):
        load_points(tmp_path / "bad.npy")


def test_unknown_name_lists_the_names():
    with pytest.raises(UserError, match="25gaussians, swissroll"):
        toy_split("25gausians")
