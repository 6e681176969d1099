"""The Denoising-EBM's texture stage against known answers.

- The paper's chain (Langevin on U_c(x, σ), a fresh ε per evaluation) with the Bayes-optimal denoiser of
  Gaussian data N(μ, C): its stationary law is N(μ, (C + σ²I)²/σ²), not the data (docs/debm_texture.md).
- Annealed Langevin on an exact noise-conditional score reaches a Gaussian mixture, weights included.
- The code prior, where the semantic chains start, is the Gaussian of the codes it has seen.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from test_debm import tiny_model
from test_samplers import MMD_SD, N_MMD, N_SE, gen, mmd_score
from tiltkit.config import DebmRunConfig, TextureSampler, from_dict
from tiltkit.denoising import CodePrior, DenoisingEBM
from tiltkit.errors import UserError
from tiltkit.samplers import AnnealedConfig, SamplerConfig, annealed_langevin
from tiltkit.training.denoising import texture_stage

MU = torch.tensor([0.3, -0.2])
C = torch.tensor([1.0, 0.04])  # the data's variances along the two axes


def gaussian_denoiser(x_tilde: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """r(x̃, σ) = μ + C(C + σ²I)⁻¹(x̃ − μ): E[x | x̃] for x ~ N(μ, diag C), x̃ = x + σε. x̃: (B, 1, 1, 2)."""
    s2 = sigma.view(-1, 1, 1, 1) ** 2
    return MU + C / (C + s2) * (x_tilde - MU)


def test_the_paper_s_texture_chain_with_an_exact_denoiser_samples_a_wider_gaussian_than_the_data():
    sigma, n = 0.5, 4000
    model = SimpleNamespace(denoise=gaussian_denoiser)  # texture_energy needs only r
    g = gen(0)
    energy = lambda x: DenoisingEBM.texture_energy(model, x, torch.full((len(x),), sigma), generator=g)  # noqa: E731
    start = (MU + C.sqrt() * torch.randn(n, 1, 1, 2, generator=g))  # from the data itself
    x = SamplerConfig("langevin", 3000, 0.01).run(energy, start, g).noise.view(n, 2)
    predicted = (C + sigma ** 2) ** 2 / sigma ** 2  # N(μ, (C + σ²I)²/σ²): 6.25 and 0.3364
    var = x.var(0)
    se = predicted * math.sqrt(2 / n)
    assert torch.all((var - predicted).abs() < N_SE * se + 0.03 * predicted), (var, predicted)
    assert torch.all((x.mean(0) - MU).abs() < N_SE * (predicted / n).sqrt())
    assert torch.all(var > 5 * C)  # the data's variances are 1 and 0.04: the chain spreads far past them


# A mixture of four Gaussians of std S at (±1, ±1), unequal weights; blurred at σ it is the same mixture with
# std √(S² + σ²), whose score is exact.
CENTRES = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
WEIGHTS = torch.tensor([0.4, 0.3, 0.2, 0.1])
S = 0.15


def mixture_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    var = S ** 2 + sigma.view(-1, 1, 1) ** 2
    d = CENTRES - x[:, None, :]  # (B, K, 2)
    logits = WEIGHTS.log() - d.pow(2).sum(-1) / (2 * var[:, :, 0])
    r = logits.softmax(1)
    return (r[:, :, None] * d / var).sum(1)


def mixture_samples(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return CENTRES[k] + S * torch.randn(n, 2, generator=g)


def test_annealed_langevin_on_an_exact_score_reaches_a_gaussian_mixture():
    g = gen(1)
    sigmas = torch.logspace(math.log10(3.0), math.log10(0.01), 10)
    start = 3.0 * torch.randn(N_MMD, 2, generator=g)
    x = annealed_langevin(mixture_score, start, sigmas, steps=100, step_size=2e-5, generator=g).noise
    assert mmd_score(x, mixture_samples(N_MMD, gen(2)), gen(3)) < MMD_SD
    nearest = torch.cdist(x, CENTRES).argmin(1)
    for k, w in enumerate(WEIGHTS.tolist()):  # each mode's mass, which Langevin at σ_L alone would not find
        assert abs((nearest == k).float().mean().item() - w) < N_SE * math.sqrt(w * (1 - w) / N_MMD)


def test_langevin_at_the_last_level_alone_misses_the_weights():
    """The check above has power: without the annealing, chains from the same start keep the modes they
    fall into first, and the weights come out wrong."""
    g = gen(1)
    start = 3.0 * torch.randn(N_MMD, 2, generator=g)
    x = annealed_langevin(mixture_score, start, torch.tensor([0.01]), steps=1000, step_size=2e-5, generator=g).noise
    nearest = torch.cdist(x, CENTRES).argmin(1)
    fractions = torch.stack([(nearest == k).float().mean() for k in range(4)])
    assert (fractions - WEIGHTS).abs().max() > 0.1


@pytest.mark.parametrize("ratio", [1.0, 3.0])
def test_annealed_step_below_its_stability_bound_has_the_closed_form_variance(ratio):
    """Where the denoiser ignores its input (here the data are one point, 0, so q_σ = N(0, σ²) and
    s = −x/σ²), a step is x ← (1 − c)x + √α z with c = ε/(2σ²): stationary variance α / (c(2 − c)) for
    ε < 4σ², which is what the docstring's bound says."""
    sigma, n = 0.1, 20_000
    eps = ratio * sigma ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # below the bound: no warning
        x = annealed_langevin(lambda x, s: -x / s[:, None] ** 2, torch.zeros(n, 1), torch.tensor([sigma]), steps=200,
                              step_size=eps, generator=gen(5), final_denoise=False).noise
    c = eps / (2 * sigma ** 2)
    expected = eps / (c * (2 - c))
    assert abs(x.var().item() - expected) < N_SE * expected * math.sqrt(2 / n)


def test_annealed_step_above_its_stability_bound_diverges_and_warns():
    sigma = 0.1
    with pytest.warns(RuntimeWarning, match="diverges"):
        x = annealed_langevin(lambda x, s: -x / s[:, None] ** 2, torch.zeros(100, 1), torch.tensor([sigma]),
                              steps=100, step_size=5 * sigma ** 2, generator=gen(5), final_denoise=False).noise
    assert x.abs().median() > 1e6  # |1 − 5/2| = 1.5 per step


def test_annealed_trajectory_and_final_denoise():
    g = gen(4)
    sigmas = torch.tensor([0.5, 0.1])
    out = annealed_langevin(mixture_score, torch.zeros(8, 2), sigmas, 4, 1e-3, g, return_trajectory=True,
                            trajectory_every=2)
    assert len(out.trajectory) == 1 + 8 // 2 + 1  # start, every 2 of 8 steps, the denoised end
    assert torch.equal(out.trajectory[-1], out.noise)
    plain = annealed_langevin(mixture_score, torch.zeros(8, 2), sigmas, 4, 1e-3, gen(4), final_denoise=False)
    before = out.trajectory[-2]
    assert torch.allclose(plain.noise, before)
    assert torch.allclose(out.noise, before + 0.1 ** 2 * mixture_score(before, torch.full((8,), 0.1)))


def test_the_code_prior_is_the_running_gaussian_of_the_codes_it_sees():
    g = gen(5)
    prior = CodePrior(3)
    assert torch.equal(prior.sample(4, gen(6)), torch.randn(4, 3, generator=gen(6)))  # before any code: N(0, I)
    mean, chol = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([[1.0, 0, 0], [0.5, 0.3, 0], [0, 0.2, 0.1]])
    for _ in range(400):
        prior.update(mean + torch.randn(256, 3, generator=g) @ chol.T)
    assert int(prior.count) == 400
    torch.testing.assert_close(prior.mean, mean, atol=0.02, rtol=0)
    torch.testing.assert_close(prior.covariance(), chol @ chol.T, atol=0.03, rtol=0)
    z = prior.sample(20_000, g)
    torch.testing.assert_close(z.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), chol @ chol.T, atol=0.04, rtol=0)


def test_the_annealed_texture_stage_starts_from_the_semantic_image_and_ends_denoised():
    m = tiny_model()
    latent, annealed = SamplerConfig("langevin", 2, 0.2), AnnealedConfig(0.3, levels=3, steps=2, clamp=(-1.0, 1.0))
    out = m.sample(5, latent, annealed, gen(7), sigma=0.3, return_trajectory=True)
    levels = m.texture_levels(annealed)
    assert levels[0].item() == pytest.approx(0.3) and levels[-1].item() == pytest.approx(m.sigmas[-1].item())
    assert len(out.trajectory) == (2 + 1) + 1 + 3 * 2 + 1  # h(z_0..z_2), x⁰ + σ_start·n, 6 steps, denoised
    start = out.trajectory[3]
    assert 0.2 < (start - out.semantic).std().item() < 0.4  # x⁰ + 0.3·n
    last = out.trajectory[-2]
    torch.testing.assert_close(out.x, (last + m.sigmas[-1] ** 2 * m.score(last, m.sigmas[-1:].expand(5))).clamp(-1, 1))
    x, s = torch.rand(4, *m.data_shape) * 2 - 1, torch.tensor([0.1, 0.2, 0.5, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(m.score(x, s), (m.denoise(x, s) - x) / s.view(-1, 1, 1, 1) ** 2)
    with pytest.raises(ValueError, match="sigma_start"):
        m.texture_levels(AnnealedConfig(sigma_start=float(m.sigmas[-1]) / 2))


def test_the_recipe_picks_the_texture_stage_and_refuses_a_start_below_the_ladder():
    default = from_dict(DebmRunConfig, {})
    assert default.texture_sampler is TextureSampler.ANNEALED and texture_stage(default) == default.sample_annealed
    paper = from_dict(DebmRunConfig, {"texture_sampler": "paper"})
    assert texture_stage(paper) == paper.sample_pixel_sampler
    with pytest.raises(UserError, match=r"sample_annealed.sigma_start must be above .*sigma_min = 0.05"):
        from_dict(DebmRunConfig, {"model_kwargs": {"sigma_min": 0.05}, "sample_annealed": {"sigma_start": 0.05}})
    with pytest.raises(UserError, match="levels ≥ 1"):
        from_dict(DebmRunConfig, {"sample_annealed": {"levels": 0}})


def test_the_code_prior_s_log_density_is_the_gaussian_s():
    prior = CodePrior(3)
    z = torch.randn(5, 3, generator=gen(8))
    exact = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3)).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), exact)  # before any code: N(0, I)
    for _ in range(50):
        prior.update(torch.tensor([1.0, 0.0, -1.0]) + torch.randn(64, 3, generator=gen(9)) * torch.tensor([1.0, 2.0, 0.5]))
    cov = prior.covariance() + 1e-4 * torch.eye(3)
    exact = torch.distributions.MultivariateNormal(prior.mean, cov).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), exact)


def test_without_a_semantic_chain_the_texture_stage_starts_from_the_decoded_prior_draw():
    m = tiny_model()
    z0 = m.sample_noise(3, gen(10))
    out = m.sample(3, None, AnnealedConfig(0.3, levels=2, steps=1), gen(11), z0=z0, return_trajectory=True)
    assert torch.equal(out.z, z0)
    with torch.no_grad():
        torch.testing.assert_close(out.semantic, m.decode(z0))
    assert len(out.trajectory) == 1 + 1 + 2 + 1  # h(z⁰), the noisy start, 2 steps, denoised
    cfg = from_dict(DebmRunConfig, {"sample_latent_sampler": None})
    assert cfg.sample_latent_sampler is None
