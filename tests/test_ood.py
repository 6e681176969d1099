"""OOD scoring: detection metrics against closed forms, the OOD sets' properties, what each run offers,
and `tiltkit ood` end to end on tiny runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import norm

from conftest import sets
from test_image_pipeline import TINY_TILT, TINY_VAE, squares
from test_tilt import N_SE
import tiltkit
from tiltkit.cli import main
from tiltkit.data.source import DataSource
from tiltkit.energies import SmallConvEnergy
from tiltkit.errors import UserError
from tiltkit.generators import ConvVAE, PixelBox
from tiltkit.metrics.ood import (FITTED, MIN_N, Score, ShapeWarning, Synthetic, compute_scores,
                                 conform_shape, constant_images, detection_metrics, fpr_at_tpr, gaussian_images,
                                 load_ood_images, noisy_images, parse_scores, synthetic_set, uniform_images, vflip)
from tiltkit.tilt import TiltedModel
from tiltkit.training import BASE, TILT

SHAPE = (1, 28, 28)


# ---------------------------------------------------------------- detection metrics

def test_perfect_separation():
    rng = np.random.default_rng(0)
    m = detection_metrics(rng.uniform(1, 2, 300), rng.uniform(-2, 0.99, 500))
    assert m == {"auroc": 1.0, "auprc": 1.0, "fpr95": 0.0}
    # the other way round: every OOD image scores higher than every in-distribution image
    m = detection_metrics(rng.uniform(-2, 0, 300), rng.uniform(1, 2, 500))
    assert m["auroc"] == 0.0 and m["fpr95"] == 1.0


N = 20_000


def test_identical_distributions_are_at_chance():
    rng = np.random.default_rng(1)
    m = detection_metrics(rng.normal(size=N), rng.normal(size=N))
    # under H0 the Mann-Whitney AUROC has sd sqrt((n1 + n2 + 1) / (12 n1 n2)) ≈ 0.0029: 5 sd
    sd = math.sqrt((2 * N + 1) / (12 * N * N))
    assert abs(m["auroc"] - 0.5) < 5 * sd
    assert abs(m["auprc"] - 0.5) < 0.02  # chance precision = prevalence of the positives, 1/2
    assert abs(m["fpr95"] - 0.95) < 0.01  # same distribution: the 95%-TPR threshold accepts 95% of OOD


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0])
def test_shifted_gaussians_match_the_closed_form(d):
    rng = np.random.default_rng(2)
    s_in, s_out = rng.normal(d, 1, N), rng.normal(0, 1, N)
    m = detection_metrics(s_in, s_out)
    # P(S_in > S_out) with S_in − S_out ~ N(d, 2): Φ(d/√2); sd ≤ sqrt(A(1 − A)/n) (Birnbaum–Klose bound)
    auroc = norm.cdf(d / math.sqrt(2))
    assert abs(m["auroc"] - auroc) < 5 * math.sqrt(auroc * (1 - auroc) / N)
    # threshold t = d − z₀.₉₅ keeps 95% of N(d, 1); the OOD N(0, 1) above it: 1 − Φ(d − 1.645).
    # sd: binomial sqrt(p(1 − p)/n) plus the threshold's quantile error φ(t)·sqrt(.05·.95/n)/φ(z₀.₉₅)
    t = d - norm.ppf(0.95)
    fpr = 1 - norm.cdf(t)
    sd = math.sqrt(fpr * (1 - fpr) / N) + norm.pdf(t) * math.sqrt(0.05 * 0.95 / N) / norm.pdf(norm.ppf(0.95))
    assert abs(m["fpr95"] - fpr) < 5 * sd


def test_fpr95_by_hand():
    s_in = np.arange(1.0, 21.0)  # 20 scores: keeping 19 of them (95%) puts the threshold at the 19th largest, 2
    s_out = np.array([0.0, 1.5, 2.0, 3.0, 25.0])  # 2, 3 and 25 pass (≥ 2): 3 of 5
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(0.6)
    assert detection_metrics(s_in, s_out)["fpr95"] == pytest.approx(0.6)
    # 10 in-distribution scores: ⌈9.5⌉ = 10 must pass, the threshold is the minimum, 1
    assert fpr_at_tpr(np.arange(1.0, 11.0), np.array([0.5, 1.0, 7.0])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(bad):
    with pytest.raises(ValueError, match="1 of 4 OOD scores are NaN or ±inf"):
        detection_metrics(np.zeros(5), np.array([0.0, 1.0, bad, 2.0]))


# ---------------------------------------------------------------- OOD sets

@pytest.fixture(scope="module")
def test_images():
    x, _ = squares(64, np.random.default_rng(3))
    return torch.from_numpy(x).unsqueeze(1)


@pytest.mark.parametrize("kind", list(Synthetic))
def test_synthetic_sets_have_the_data_shape(kind, test_images):
    out = synthetic_set(kind, test_images, torch.Generator().manual_seed(0))
    assert out.shape == test_images.shape and out.dtype == torch.uint8
    again = synthetic_set(kind, test_images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded


def test_uniform_and_gaussian_pixels():
    u = uniform_images((200, 3, 16, 16), torch.Generator().manual_seed(0)).double()
    assert u.min() == 0 and u.max() == 255 and abs(u.mean() - 127.5) < 1.0  # sd of the mean: 74/√153600 ≈ 0.2
    g = gaussian_images((200, 3, 16, 16), torch.Generator().manual_seed(0)).double()
    # N(128, 64²) clipped at ≈ ±2σ: mean ≈ 128, sd a little under 64 (≈ 61.6 for the clipped normal)
    assert abs(g.mean() - 128) < 1.0 and 58 < g.std() < 64


def test_constant_images_have_no_variation_within_an_image():
    c = constant_images((50, 3, 8, 8), torch.Generator().manual_seed(0)).double()
    assert (c.flatten(2).var(2) == 0).all()  # one value per image and channel
    assert c[:, :, 0, 0].std(0).min() > 30  # ... but random across images (uniform: sd 74)
    assert (c[:, 0] != c[:, 1]).any()  # a colour, not only grays


def test_noisy_images_add_the_configured_noise():
    gray = torch.full((100, 1, 16, 16), 128, dtype=torch.uint8)
    diff = noisy_images(gray, torch.Generator().manual_seed(0)).double() - 128
    # σ = 25.5 on mid-gray images (no clipping at 128 ± 5σ); sd of the sd estimate ≈ σ/√(2·25600) ≈ 0.11
    assert abs(diff.mean()) < 0.5 and abs(diff.std() - 0.1 * 255) < 0.5
    assert noisy_images(gray, torch.Generator().manual_seed(0), sigma=5.0).double().sub(128).std() < 6


def test_interp_is_the_mean_of_two_different_images():
    x = (torch.arange(40, dtype=torch.uint8) * 2).view(40, 1, 1, 1).expand(40, 1, 4, 4).contiguous()
    out = synthetic_set(Synthetic.INTERP, x, torch.Generator().manual_seed(0)).long()
    # image i is 2i everywhere, so the mean of images i and j is i + j at every pixel
    values = out[:, 0, 0, 0]
    assert (out == values.view(-1, 1, 1, 1)).all()
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))  # the pairs drawn: (perm[k], perm[k − 1])
    assert torch.equal(values, perm + perm.roll(1)) and (perm != perm.roll(1)).all()
    two = synthetic_set(Synthetic.INTERP, torch.cat([x[3:4], x[7:8]]), torch.Generator())
    assert (two == 10).all()  # (6 + 14) / 2, both ways round


def test_vflip_reverses_rows(test_images):
    flipped = synthetic_set(Synthetic.VFLIP, test_images, torch.Generator())
    assert torch.equal(flipped[:, :, 0], test_images[:, :, -1])
    assert torch.equal(vflip(flipped), test_images)


def test_a_differently_shaped_set_is_resized_with_a_warning(tmp_path):
    rgb = np.zeros((30, 32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 90  # every image the colour (30, 60, 90)
    np.savez(tmp_path / "rgb.npz", x_test=rgb)
    with pytest.warns(ShapeWarning, match=r"\(3, 32, 32\) made \(1, 28, 28\).*mean of R, G, B.*32×32 → 28×28"):
        x, _, note = load_ood_images(str(tmp_path / "rgb.npz"), None, SHAPE, 25, torch.Generator())
    assert x.shape == (25, *SHAPE) and x.dtype == torch.uint8 and "resize" in note
    assert (x == 60).all()  # the mean of the channels; a flat image stays flat under resizing
    gray = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    with pytest.warns(ShapeWarning, match="gray replicated"):
        y, _ = conform_shape(gray, (3, 4, 4), "gray")
    assert y.shape == (2, 3, 4, 4) and (y == gray).all()
    same, note = conform_shape(gray, (1, 4, 4), "same")
    assert same is gray and note is None


def test_a_path_without_a_test_split_gives_all_its_images(tmp_path):
    np.save(tmp_path / "imgs.npy", np.full((30, 28, 28), 7, np.uint8))
    x, _, note = load_ood_images(str(tmp_path / "imgs.npy"), None, SHAPE, 100, torch.Generator())
    assert x.shape == (30, *SHAPE) and note is None
    with pytest.raises(UserError, match="not an OOD set name and no such file or folder; expected uniform, gaussian"):
        load_ood_images("unifrom", None, SHAPE, 10, torch.Generator())


# ---------------------------------------------------------------- scores a run offers

@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vae = ConvVAE(SHAPE, latent_dim=4, width=4).eval()
    return {"base": BASE.scorer(vae), "tilt": TILT.scorer(TiltedModel(vae, SmallConvEnergy(SHAPE, width=4)).eval()),
            "pixel": TILT.scorer(TiltedModel(PixelBox(SHAPE), SmallConvEnergy(SHAPE, width=4)).eval())}


def test_available_scores_per_run_kind(models):
    assert models["base"].offered == [Score.ELBO, Score.IWAE, Score.REGRET, Score.COMPLEXITY, Score.COMBINED]
    assert models["tilt"].offered == [Score.ELBO, Score.IWAE, Score.REGRET, Score.COMPLEXITY, Score.ENERGY,
                                      Score.TILTED, Score.COMBINED]
    assert models["pixel"].offered == [Score.ENERGY, Score.COMBINED]
    assert parse_scores(None, models["pixel"]) == [Score.ENERGY, Score.COMBINED]
    with pytest.raises(UserError, match=r"score energy is not offered by a base run \(ConvVAE\); it offers: elbo, "
                                        r"iwae, regret, complexity, combined$"):
        parse_scores("elbo,energy", models["base"])
    with pytest.raises(UserError, match="flat PixelBox.*it offers: energy, combined$"):
        parse_scores("tilted", models["pixel"])
    with pytest.raises(UserError, match="expected a comma-separated list of elbo, iwae, regret, energy, tilted"):
        parse_scores("elbo,likelihood", models["tilt"])


def test_scores_are_consistent_and_batch_independent(models, test_images):
    scorer = models["tilt"]
    offered = [s for s in scorer.offered if s not in FITTED]  # every score but a Denoising-EBM's and the fitted ones
    s = compute_scores(scorer, test_images, offered, torch.Generator().manual_seed(0), batch=16, iw_samples=4)
    assert all(v.shape == (64,) and np.isfinite(v).all() for v in s.values())
    np.testing.assert_allclose(s[Score.TILTED], s[Score.ELBO] + s[Score.ENERGY])
    # the energy is deterministic: the same whatever the batching; the ELBO is reproducible from the seed
    again = compute_scores(scorer, test_images, offered, torch.Generator().manual_seed(0), batch=16, iw_samples=4)
    for score in offered:
        np.testing.assert_array_equal(again[score], s[score])
    s3 = compute_scores(scorer, test_images, [Score.ENERGY], torch.Generator(), batch=64)
    np.testing.assert_allclose(s3[Score.ENERGY], s[Score.ENERGY], rtol=1e-5, atol=1e-5)
    # the importance-weighted bound is not below the ELBO on average (Burda et al. 2016, Theorem 1); this untrained
    # VAE's decoder hardly uses z, so the gap is ≈ 0 here (tests/test_tilt.py measures it where it is not)
    d = s[Score.IWAE] - s[Score.ELBO]
    assert d.mean() > -N_SE * d.std() / math.sqrt(len(d))


# ---------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def ood_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = squares(200, rng), squares(60, rng)
    np.savez(root / "squares.npz", x=x, y=y, x_test=xt, y_test=yt)
    rgb = rng.integers(0, 256, (30, 3, 16, 16), dtype=np.uint8)
    np.savez(root / "rgb16.npz", x=rgb, x_test=rgb)
    assert main(["train", "base", "--data", str(root / "squares.npz"), "--model", "conv-vae", "--out",
                 str(root / "vae"), "--steps", "20", "--device", "cpu", "--quiet", *sets(TINY_VAE)]) == 0
    tilt = {**TINY_TILT, "eval_every": 0, "patience": 0}  # no validation: no domain classifier to train
    assert main(["train", "tilt", "--base", str(root / "vae"), "--out", str(root / "tilt"), "--steps", "4",
                 "--device", "cpu", "--quiet", *sets(tilt)]) == 0
    pixel = {**tilt, "base": "none", "data": str(root / "squares.npz"),
             "train_sampler": {"kind": "langevin", "steps": 3, "step_size": 0.01, "clamp": [0.0, 1.0]}}
    assert main(["train", "tilt", "--out", str(root / "pixel"), "--steps", "2", "--device", "cpu", "--quiet",
                 *sets(pixel)]) == 0
    return root


def test_pixel_ebm_offers_the_energy_and_the_combined_density(ood_runs, capsys):
    out = ood_runs / "pixel-out"
    assert main(["ood", str(ood_runs / "pixel"), "--ood", "uniform,vflip", "--n", "20", "--out", str(out),
                 "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scores"] == ["energy", "combined"] and list(result["results"]["vflip"]) == ["energy", "combined"]
    assert sorted(p.name for p in out.iterdir()) == ["hist_combined.png", "hist_energy.png", "ood.json"]


def test_ood_command_end_to_end(ood_runs, capsys):
    out = ood_runs / "out"
    argv = ["ood", str(ood_runs / "tilt"), "--ood", f"uniform,constant,noisy,vflip,{ood_runs / 'rgb16.npz'}",
            "--out", str(out), "--n", "40", "--iw-samples", "3", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("tiltkit: warning: OOD set") == 1 and "16×16 → 28×28" in captured.err
    result = json.loads((out / "ood.json").read_text())
    assert json.loads(captured.out) == result
    assert result["n"] == 40 and result["in"] == str(ood_runs / "squares.npz")
    assert result["scores"] == ["elbo", "iwae", "regret", "complexity", "energy", "tilted", "combined"]
    assert result["iw_samples"] == 3 and result["fit"]["n"] == len(DataSource(str(ood_runs / "squares.npz")).images("train").x)
    sets_ = ["uniform", "constant", "noisy", "vflip", str(ood_runs / "rgb16.npz")]
    assert list(result["results"]) == sets_ and list(result["stats"]["ood"]) == sets_
    assert result["sets"][sets_[-1]]["n"] == 30 and result["sets"][sets_[-1]]["resized"]
    for per_set in result["results"].values():
        for metrics in per_set.values():
            assert set(metrics) == {"auroc", "auprc", "fpr95"}
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
    stats = result["stats"]
    for name, per_set in result["results"].items():  # the AUROC agrees with the score means
        for score, metrics in per_set.items():
            gap = stats["in"][score]["mean"] - stats["ood"][name][score]["mean"]
            assert gap > 0 if metrics["auroc"] > 0.9 else gap < 0 if metrics["auroc"] < 0.1 else True
    for score in result["scores"]:
        assert (out / f"hist_{score}.png").stat().st_size > 1000
    logged = json.loads((ood_runs / "tilt" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["ood"] == result


def test_ood_command_is_reproducible(ood_runs, capsys):
    for name in ("a", "b"):
        assert main(["ood", str(ood_runs / "vae"), "--ood", "gaussian,interp", "--n", "30", "--seed", "5",
                     "--out", str(ood_runs / name), "--quiet"]) == 0
    capsys.readouterr()
    a, b = (json.loads((ood_runs / k / "ood.json").read_text()) for k in ("a", "b"))
    assert a["results"] == b["results"] and a["scores"] == ["elbo", "iwae", "regret", "complexity", "combined"]


@pytest.mark.parametrize("case", ["energy from a base run", "unknown set", "n too small", "n too large",
                                  "missing file", "unknown score", "twice"])
def test_ood_bad_input_is_one_line_and_exit_2(ood_runs, tmp_path, capsys, case):
    vae, tilt = str(ood_runs / "vae"), str(ood_runs / "tilt")
    out = ["--out", str(tmp_path / "o")]
    argv, message = {
        "energy from a base run": (["ood", vae, "--ood", "uniform", "--scores", "energy", *out],
                                   "it offers: elbo, iwae"),
        "unknown set": (["ood", tilt, "--ood", "uniform,static", *out], "--ood static: not an OOD set name"),
        "n too small": (["ood", tilt, "--ood", "uniform", "--n", str(MIN_N - 1), *out], f"at least {MIN_N}"),
        "n too large": (["ood", tilt, "--ood", "uniform", "--n", "61", *out], "has only 60 images"),
        "missing file": (["ood", tilt, "--ood", str(tmp_path / "nope.npz"), *out], "no such file"),
        "unknown score": (["ood", tilt, "--ood", "uniform", "--scores", "likelihood", *out], "elbo, iwae, regret"),
        "twice": (["ood", tilt, "--ood", "noisy,noisy", *out], "lists noisy twice"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not (tmp_path / "o").exists()


def test_in_distribution_set_of_another_shape_is_refused(ood_runs, capsys):
    assert main(["ood", str(ood_runs / "vae"), "--in", str(ood_runs / "rgb16.npz"), "--ood", "uniform",
                 "--out", str(ood_runs / "x")]) == 2
    assert "the run's are (1, 28, 28)" in capsys.readouterr().err
    assert DataSource(str(ood_runs / "rgb16.npz")).is_image


def test_run_score_fits_the_combined_density_on_the_run_s_training_images(ood_runs, test_images):
    run = tiltkit.load(ood_runs / "vae", device="cpu")
    a = run.score(test_images, "combined,complexity")
    assert a["combined"].shape == (len(test_images),) and np.isfinite(a["combined"]).all()
    np.testing.assert_array_equal(run.score(test_images, "combined")["combined"], a["combined"])  # reproducible


def test_the_statistics_are_drawn_in_a_fixed_order_whatever_the_hash_seed(ood_runs, tmp_path):
    """Each statistic takes its random draws in one order, so scores agree across processes (set order varies)."""
    code = (f"import tiltkit, json; r = tiltkit.load({str(ood_runs / 'tilt')!r}, device='cpu'); "
            f"import torch; x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8); "
            f"print(json.dumps({{k: v.tolist() for k, v in r.score(x, 'elbo,iwae,energy,complexity').items()}}))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")]
    assert outs[0] == outs[1] == outs[2]
