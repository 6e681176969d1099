"""TiltedModel and the MLPVAE base, checked against closed forms.

Linear-Gaussian tilt: z ~ N(0, I_d), G(z) = Az + b, E(x) = ½(x − c)ᵀP(x − c). The tilted
density in noise space, exp(−½‖z‖² − E(Az + b)), is Gaussian with

    precision Λ = I + AᵀPA,   mean μ = −Λ⁻¹AᵀP(b − c),

so samplers run through `TiltedModel.sample` must return N(μ, Λ⁻¹) (MALA, HMC) or, for
ULA, the exact stationary law of the discretized chain (same mean, covariance given per
eigenvalue λ of Λ by η / (1 − (1 − ηλ/2)²)).

Moments are compared after whitening by the expected covariance (w = L⁻¹(z − μ) should be
N(0, I)): each entry of mean(w) has SE 1/√N, diagonal entries of wᵀw/N − I have SE √(2/N),
off-diagonal ones √(1/N). Final states of N independent chains are i.i.d., so these SEs
are exact; the tolerance is 4.5 SE per entry (two-sided p ≈ 7e-6, 5 entries per check).

MLPVAE: decode is checked against manual computation; the likelihood bounds against the
exact marginal likelihood of a VAE whose encoder and decoder are linear (a probabilistic
PCA with a known posterior).
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch import nn

from tiltkit import TiltedModel
from tiltkit.errors import UserError
from tiltkit.generators import MLPVAE
from tiltkit.samplers import CompileMode, SamplerConfig, SamplerKind
from tiltkit.samplers.noise import energy_and_grad

N_SE = 4.5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_gaussian(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, n_se: float = N_SE) -> None:
    """x (N, d) i.i.d. ~ N(mean, cov): whitened mean and second moment within n_se SE per entry."""
    x, mean, cov = x.double(), mean.double(), cov.double()
    n, d = x.shape
    w = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), (x - mean).T, upper=False).T
    eye = torch.eye(d, dtype=torch.float64)
    mean_err = w.mean(0) * math.sqrt(n)
    cov_err = (w.T @ w / n - eye) / torch.sqrt((1 + eye) / n)
    assert mean_err.abs().max() < n_se, f"mean off by {mean_err.tolist()} SE"
    assert cov_err.abs().max() < n_se, f"covariance off by {cov_err.tolist()} SE"


# --------------------------------------------------------------------------------------
# Linear-Gaussian base and quadratic energy
# --------------------------------------------------------------------------------------
class LinearBase(nn.Module):
    """z ~ N(0, I_d), x = Az + b: the BaseModel protocol's sampling half."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(a.shape[1], a.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(a)
            self.linear.bias.copy_(b)

    def sample_noise(self, n, generator=None):
        return torch.randn(n, self.linear.in_features, generator=generator)

    def decode(self, noise):
        return self.linear(noise)

    def noise_energy(self, noise):
        return 0.5 * noise.pow(2).sum(1)


class QuadraticEnergy(nn.Module):
    """E(x) = ½(x − c)ᵀP(x − c); records whether its parameters required grad when called."""

    def __init__(self, c: torch.Tensor, p: torch.Tensor):
        super().__init__()
        self.c = nn.Parameter(c.clone())
        self.p = nn.Parameter(p.clone())
        self.seen_requires_grad: list[bool] = []

    def forward(self, x):
        self.seen_requires_grad.append(any(q.requires_grad for q in self.parameters()))
        d = x - self.c
        return 0.5 * ((d @ self.p) * d).sum(1)


A = torch.tensor([[1.0, 0.5], [-0.5, 1.0], [0.3, -0.2], [0.8, 0.4]])  # D = 4, d = 2
B = torch.tensor([0.5, -1.0, 2.0, 0.0])
C = torch.tensor([-1.0, 2.0, 1.0, -1.0])
_L = torch.tensor([[1.0, 0, 0, 0], [0.3, 0.8, 0, 0], [-0.2, 0.1, 0.6, 0], [0.1, -0.3, 0.2, 0.9]])
P = _L @ _L.T  # SPD

# Closed form of the tilted law in z (float64): Λ eigenvalues ≈ 1.9 and 3.2, μ ≈ (−1.23, 0.74).
LAMBDA = torch.eye(2, dtype=torch.float64) + A.double().T @ P.double() @ A.double()
COV_Z = torch.linalg.inv(LAMBDA)
MU_Z = -torch.linalg.solve(LAMBDA, A.double().T @ P.double() @ (B - C).double())


def linear_tilted_model() -> TiltedModel:
    return TiltedModel(LinearBase(A, B), QuadraticEnergy(C, P))


class OverflowingBase(LinearBase):
    """LinearBase whose decoder returns NaN where z_0 < −0.5 (a third of its prior), like a Glow inverse
    that overflows far from its data; `everywhere=True`: NaN for every z."""

    def __init__(self, a, b, everywhere: bool = False):
        super().__init__(a, b)
        self.everywhere = everywhere

    def decode(self, noise):
        x = super().decode(noise)
        broken = torch.ones_like(noise[:, 0], dtype=torch.bool) if self.everywhere else noise[:, 0] < -0.5
        return torch.where(broken[:, None], torch.full_like(x, float("nan")), x)


def test_tilted_chains_stay_where_the_base_decodes_to_finite_values():
    # The tilted law is the closed form restricted to z_0 ≥ −0.5: starts there are redrawn
    # (finite_start), steps there rejected (langevin); every sample is finite and inside.
    model = TiltedModel(OverflowingBase(A, B), QuadraticEnergy(C, P))
    start = model.sample_noise(500, gen(0))
    assert (start[:, 0] < -0.5).any()
    result = model.sample(SamplerConfig(SamplerKind.LANGEVIN, steps=100, step_size=0.05), start, gen(1))
    assert (result.noise[:, 0] >= -0.5).all() and torch.isfinite(result.energy).all()
    assert torch.isfinite(model.output(result.noise)).all()
    torch.testing.assert_close(result.energy, model(result.noise))


def test_a_base_that_never_decodes_to_finite_values_is_refused():
    model = TiltedModel(OverflowingBase(A, B, everywhere=True), QuadraticEnergy(C, P))
    with pytest.raises(UserError, match="non-finite"):
        model.sample(SamplerConfig(SamplerKind.LANGEVIN, steps=5, step_size=0.05), 10, gen(0))


N_CHAINS = 20_000  # variance SE √(2/N) = 1%


def test_closed_form_is_what_the_model_computes():
    # U(z) = ½(z − μ)ᵀΛ(z − μ) + const: the gradient of the model's U must be Λ(z − μ).
    model = linear_tilted_model()
    z = torch.randn(50, 2, generator=gen(0), dtype=torch.float64)
    model.double()
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(model(z).sum(), z)
    torch.testing.assert_close(grad, (z - MU_Z).detach() @ LAMBDA)


# MALA η = 0.5: η·λ_max/2 = 0.8, where ULA would be 40% off in the stiff direction; only the
# Metropolis correction makes it exact. Slow direction contracts by ≥ 1 − 0.5·1.9/2 per
# accepted step: 200 steps forget the N(0, I) start entirely.
# HMC h = 0.4, L = 3: leapfrog rotation per iteration 2.2 and 1.7 rad (far from π, where
# HMC on a Gaussian nearly reflects and mixes slowly); 100 iterations.
EXACT_SAMPLERS = {
    "mala": SamplerConfig(SamplerKind.MALA, steps=200, step_size=0.5),
    "hmc": SamplerConfig(SamplerKind.HMC, steps=100, step_size=0.4, n_leapfrog=3),
}


@pytest.mark.parametrize("kind", EXACT_SAMPLERS)
def test_tilted_sampling_recovers_linear_gaussian(kind):
    model = linear_tilted_model()
    result = model.sample(EXACT_SAMPLERS[kind], N_CHAINS, gen(1))
    assert 0.5 < result.acceptance_rate <= 1.0
    assert_gaussian(result.noise, MU_Z, COV_Z)


def ula_stationary_cov(cov: torch.Tensor, eta: float) -> torch.Tensor:
    """Exact stationary covariance of ULA on N(·, cov): η / (1 − (1 − ηλ/2)²) per eigenvalue λ of cov⁻¹."""
    lam, vec = torch.linalg.eigh(torch.linalg.inv(cov.double()))
    return (vec * (eta / (1 - (1 - eta * lam / 2) ** 2))) @ vec.T


def test_tilted_ula_matches_exact_discretized_chain():
    # η = 0.2: stiff direction (λ = 3.2) has variance 0.372 instead of 0.313 (+19%, ~13 SE),
    # slow direction contracts by 0.81 per step: 150 steps forget the start (0.81¹⁵⁰ ≈ 2e-14).
    eta = 0.2
    result = linear_tilted_model().sample(SamplerConfig(SamplerKind.LANGEVIN, 150, eta), N_CHAINS, gen(2))
    assert result.acceptance_rate is None
    assert_gaussian(result.noise, MU_Z, ula_stationary_cov(COV_Z, eta))
    with pytest.raises(AssertionError):  # the bias is real and the check sees it
        assert_gaussian(result.noise, MU_Z, COV_Z)


def test_sample_from_noise_start_and_reproducibility():
    model = linear_tilted_model()
    cfg = SamplerConfig(SamplerKind.MALA, steps=10, step_size=0.3)
    start = model.sample_noise(100, gen(3))
    from_int = model.sample(cfg, 100, gen(3))  # draws the same start from the same generator first
    g = gen(3)
    model.sample_noise(100, g)
    from_noise = model.sample(cfg, start, g)
    assert torch.equal(from_int.noise, from_noise.noise)
    again = model.sample(cfg, 100, gen(3), return_trajectory=True, trajectory_every=5)
    assert torch.equal(again.noise, from_int.noise)
    assert len(again.trajectory) == 3 and torch.equal(again.trajectory[0], start)


# --------------------------------------------------------------------------------------
# forward = U, golden value
# --------------------------------------------------------------------------------------
def test_forward_golden_value():
    # Integer-valued model so every operation is exact in float32:
    # A = [[1,0],[0,1],[1,1],[0,0]], b = 0, c = (1,0,0,0), P = diag(1,2,3,4).
    # ε = (1, 2):  ½‖ε‖² = 2.5; x = (1, 2, 3, 0);   x − c = (0, 2, 3, 0);    E = ½(8 + 27) = 17.5 → U = 20.
    # ε = (0, −1): ½‖ε‖² = 0.5; x = (0, −1, −1, 0); x − c = (−1, −1, −1, 0); E = ½(1 + 2 + 3) = 3 → U = 3.5.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    model = TiltedModel(LinearBase(a, torch.zeros(4)), QuadraticEnergy(torch.tensor([1.0, 0, 0, 0]),
                                                                     torch.diag(torch.tensor([1.0, 2, 3, 4]))))
    eps = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    assert torch.equal(model(eps), torch.tensor([20.0, 3.5]))
    assert torch.equal(model(eps), model.base.noise_energy(eps) + model.energy(model.base.decode(eps)))
    assert torch.equal(model.energy_fn()(eps), model(eps))
    assert torch.equal(model.decode(eps), torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.0, -1.0, -1.0, 0.0]]))


def test_forward_matches_closed_form_float64():
    model = linear_tilted_model().double()
    z = torch.randn(64, 2, generator=gen(4), dtype=torch.float64)
    x = z @ A.double().T + B.double()
    expected = 0.5 * z.pow(2).sum(1) + 0.5 * (((x - C.double()) @ P.double()) * (x - C.double())).sum(1)
    torch.testing.assert_close(model(z), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# Parameters are frozen while sampling
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [SamplerKind.LANGEVIN, SamplerKind.MALA, SamplerKind.HMC])
def test_sampling_leaves_parameters_alone(kind):
    model = linear_tilted_model()
    model.energy.c.requires_grad_(False)  # a mixed set of flags, to be restored as it was
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    values = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.sample(SamplerConfig(kind, steps=5, step_size=0.1, n_leapfrog=2), 64, gen(5))
    assert model.energy.seen_requires_grad and not any(model.energy.seen_requires_grad), \
        "parameters took part in autograd while sampling"
    for name, p in model.named_parameters():
        assert p.grad is None, f"{name} accumulated a gradient"
        assert torch.equal(p.detach(), values[name]), f"{name} changed"
        assert p.requires_grad == flags[name], f"{name}.requires_grad not restored"
    assert flags["energy.c"] is False and flags["energy.p"] is True


def test_frozen_restores_flags_when_sampling_fails():
    model = linear_tilted_model()

    def broken(noise):
        raise RuntimeError("energy blew up")

    model.energy.forward = broken
    with pytest.raises(RuntimeError):
        model.sample(SamplerConfig(SamplerKind.MALA, 3, 0.1), 8, gen(0))
    assert all(p.requires_grad for p in model.parameters())


def test_training_gradients_still_flow_after_sampling():
    # After sampling, the energy's parameters are trainable again: a CD-style loss reaches them.
    model = linear_tilted_model()
    neg = model.sample(SamplerConfig(SamplerKind.LANGEVIN, 5, 0.1), 32, gen(6)).noise
    loss = model.energy(model.decode(neg).detach()).mean()
    loss.backward()
    assert model.energy.p.grad is not None and model.energy.c.grad is not None
    assert model.base.linear.weight.grad is None  # the negatives were detached


# --------------------------------------------------------------------------------------
# Compiled path: U and ∇U from one torch.compile'd graph (needs a C++ compiler on CPU)
# --------------------------------------------------------------------------------------
needs_compiler = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                    reason="torch.compile on CPU needs a C++ compiler")


class PlainQuadratic(QuadraticEnergy):
    def forward(self, x):  # no bookkeeping side effect inside the compiled graph
        d = x - self.c
        return 0.5 * ((d @ self.p) * d).sum(1)


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("mode", list(CompileMode))
def test_compiled_energy_is_the_closed_form_and_follows_parameter_updates(mode):
    model = TiltedModel(LinearBase(A, B), PlainQuadratic(C, P))
    compiled = model.energy_fn(True, mode)
    assert model.energy_fn(True, mode) is compiled  # compiled once per model and mode
    z = torch.randn(64, 2, generator=gen(7))
    with model.frozen():
        energy, (grad,) = energy_and_grad(compiled, z)
    torch.testing.assert_close(grad.double(), (z.double() - MU_Z) @ LAMBDA, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(energy, model(z).detach())
    assert all(p.grad is None for p in model.parameters())  # ∇ w.r.t. the noise only
    with torch.no_grad():  # an optimizer step on the energy: the graph must read the new c
        model.energy.c.add_(1.0)
    with model.frozen():
        _, (grad,) = energy_and_grad(compiled, z)
    z.requires_grad_(True)
    (eager,) = torch.autograd.grad(model(z).sum(), z)
    torch.testing.assert_close(grad, eager, rtol=1e-5, atol=1e-5)


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("mode", list(CompileMode))
def test_compiled_mala_recovers_linear_gaussian(mode):
    model = TiltedModel(LinearBase(A, B), PlainQuadratic(C, P))
    result = model.sample(EXACT_SAMPLERS["mala"], N_CHAINS, gen(8), compiled=True, compile_mode=mode)
    assert 0.5 < result.acceptance_rate <= 1.0
    assert_gaussian(result.noise, MU_Z, COV_Z)


# --------------------------------------------------------------------------------------
# MLPVAE: decode and noise
# --------------------------------------------------------------------------------------
def fitted_vae(pixel_noise: bool, seed: int = 0, **kwargs) -> MLPVAE:
    with torch.random.fork_rng(devices=[]):  # seeded network init, global RNG left as it was
        torch.manual_seed(seed)
        vae = MLPVAE(data_dim=3, latent_dim=2, hidden=16, depth=2, pixel_noise=pixel_noise, **kwargs)
    data = torch.randn(500, 3, generator=gen(seed)) * torch.tensor([2.0, 0.5, 3.0]) + torch.tensor([1.0, -2.0, 0.5])
    vae.standardize.fit(data)
    with torch.no_grad():
        vae.log_sigma.copy_(torch.tensor([-1.0, -0.5, -2.0]))
    return vae


def test_vae_pixel_noise_decode_is_mean_plus_sigma_eps_in_data_units():
    vae = fitted_vae(pixel_noise=True)
    noise = vae.sample_noise(200, gen(1))
    assert isinstance(noise, tuple) and noise[0].shape == (200, 2) and noise[1].shape == (200, 3)
    eps_z, eps_x = noise
    # the two parts are independent N(0, I) draws from the generator, in order
    g = gen(1)
    assert torch.equal(eps_z, torch.randn(200, 2, generator=g)) and torch.equal(eps_x, torch.randn(200, 3, generator=g))
    with torch.no_grad():
        mu = vae.decoder(eps_z)
        sigma = torch.exp(torch.tensor([-1.0, -0.5, -2.0]))
        manual = (mu + sigma * eps_x) * vae.standardize.scale + vae.standardize.shift
        torch.testing.assert_close(vae.decode(noise), manual)
        # ε_x = 0 gives the decoder mean in data units
        torch.testing.assert_close(vae.decode((eps_z, torch.zeros_like(eps_x))),
                                   mu * vae.standardize.scale + vae.standardize.shift)
        # noise energy is ½ of the squared norm over both parts
        torch.testing.assert_close(vae.noise_energy(noise), 0.5 * (eps_z.pow(2).sum(1) + eps_x.pow(2).sum(1)))


def test_vae_sigma_clamped_at_min_log_sigma():
    vae = fitted_vae(pixel_noise=True, min_log_sigma=-3.0)
    with torch.no_grad():
        vae.log_sigma.copy_(torch.tensor([-10.0, -1.0, -3.5]))
        eps_z, eps_x = torch.zeros(1, 2), torch.ones(1, 3)
        got = vae.decode((eps_z, eps_x)) - vae.decode((eps_z, torch.zeros(1, 3)))
    torch.testing.assert_close(got[0], torch.exp(torch.tensor([-3.0, -1.0, -3.0])) * vae.standardize.scale)


def test_vae_latent_only_decode_is_decoder_mean():
    vae = fitted_vae(pixel_noise=False)
    eps = vae.sample_noise(50, gen(2))
    assert isinstance(eps, torch.Tensor) and eps.shape == (50, 2)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(eps), vae.decoder(eps) * vae.standardize.scale + vae.standardize.shift)


def test_tilted_vae_forward_over_pixel_noise():
    vae = fitted_vae(pixel_noise=True)
    energy = QuadraticEnergy(torch.tensor([0.5, -1.0, 1.0]), torch.diag(torch.tensor([1.0, 2.0, 0.5])))
    model = TiltedModel(vae, energy)
    noise = vae.sample_noise(10, gen(3))
    with torch.no_grad():
        x = vae.decode(noise)
        expected = 0.5 * (noise[0].pow(2).sum(1) + noise[1].pow(2).sum(1)) + 0.5 * (
            ((x - energy.c) @ energy.p) * (x - energy.c)).sum(1)
        torch.testing.assert_close(model(noise), expected)
    # and tuple noise passes through TiltedModel.sample
    out = model.sample(SamplerConfig(SamplerKind.MALA, 3, 0.05), noise, gen(4))
    assert isinstance(out.noise, tuple) and [t.shape for t in out.noise] == [(10, 2), (10, 3)]


# --------------------------------------------------------------------------------------
# MLPVAE: likelihood bounds against the exact marginal of a linear VAE
# --------------------------------------------------------------------------------------
# Decoder y = Wz + b0 + σe with orthogonal columns (WᵀW = diag(2.25, 2)) and σ = 0.5 on every
# feature, so the posterior p(z | y) = N(Σ_p Wᵀ(y − b0)/σ², Σ_p), Σ_p = (I + WᵀW/σ²)⁻¹ = diag(1/10, 1/9)
# is diagonal, i.e. exactly representable by the encoder. p(y) = N(b0, WWᵀ + σ²I);
# log p(x) = log p(y) − Σ log scale.
W = torch.tensor([[1.0, 1.0], [1.0, -1.0], [0.5, 0.0]], dtype=torch.float64)
B0 = torch.tensor([0.2, -0.3, 0.1], dtype=torch.float64)
SIGMA = 0.5
SHIFT = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
SCALE = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)
POST_VAR = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + W.T @ W / SIGMA**2).diagonal()
ENC_W = POST_VAR[:, None] * W.T / SIGMA**2  # posterior mean = ENC_W (y − b0)


def linear_vae(mean_offset: float = 0.0, log_var_offset: float = 0.0) -> MLPVAE:
    """Linear-Gaussian VAE (depth 0: encoder and decoder are single Linear layers), in float64.

    With zero offsets the encoder is the exact posterior; offsets shift q's mean and log-variance.
    """
    vae = MLPVAE(data_dim=3, latent_dim=2, depth=0).double()
    with torch.no_grad():
        vae.decoder[0].weight.copy_(W)
        vae.decoder[0].bias.copy_(B0)
        vae.log_sigma.fill_(math.log(SIGMA))
        vae.encoder[0].weight.zero_()
        vae.encoder[0].weight[:2].copy_(ENC_W)
        vae.encoder[0].bias[:2].copy_(-ENC_W @ B0 + mean_offset)
        vae.encoder[0].bias[2:].copy_(POST_VAR.log() + log_var_offset)
        vae.standardize.shift.copy_(SHIFT)
        vae.standardize.scale.copy_(SCALE)
    return vae


def exact_log_px(x: torch.Tensor) -> torch.Tensor:
    y = (x - SHIFT) / SCALE
    marginal = torch.distributions.MultivariateNormal(B0, W @ W.T + SIGMA**2 * torch.eye(3, dtype=torch.float64))
    return marginal.log_prob(y) - SCALE.log().sum()


def linear_vae_data(n: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = z @ W.T + B0 + SIGMA * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return y * SCALE + SHIFT


def mean_and_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


N_VAE = 2000


def test_linear_vae_exact_posterior_gives_exact_likelihood():
    vae = linear_vae()
    x = linear_vae_data(N_VAE, seed=10)
    exact = exact_log_px(x)
    with torch.no_grad():
        # With q = posterior every importance weight p(y, z)/q(z | y) equals p(y): the IWAE bound
        # is exact for every example and any k, Monte-Carlo noise included.
        for k in (2, 10):
            torch.testing.assert_close(vae.log_likelihood(x, gen(11), n_importance=k), exact, rtol=0, atol=1e-9)
        # The ELBO (analytic KL, one-sample reconstruction) is unbiased for log p(x) here.
        m, se = mean_and_se(vae.log_likelihood(x, gen(12)) - exact)
    assert abs(m) < N_SE * se, f"ELBO − log p(x) = {m:.4f} ± {se:.4f}"
    assert se > 0  # it is a noisy estimator; the exactness above is not a degenerate case


def gaussian_kl(m_q, v_q, m_p, v_p) -> torch.Tensor:
    """KL(N(m_q, diag v_q) ‖ N(m_p, diag v_p)), per row."""
    return 0.5 * (v_q / v_p + (m_q - m_p).pow(2) / v_p - 1 + (v_p / v_q).log()).sum(-1)


def test_linear_vae_bounds_with_imperfect_encoder():
    mean_offset, log_var_offset = 0.3, 0.7
    vae = linear_vae(mean_offset, log_var_offset)
    x = linear_vae_data(N_VAE, seed=20)
    exact = exact_log_px(x)
    # E[ELBO(x)] = log p(x) − KL(q(z | x) ‖ p(z | x)); here the KL is the same for every x.
    gap = gaussian_kl(torch.full((2,), mean_offset, dtype=torch.float64), POST_VAR * math.exp(log_var_offset),
                      torch.zeros(2, dtype=torch.float64), POST_VAR)
    assert gap > 0.5  # a real gap (1.17 nats), ≫ the SEs below (ELBO ≈ 0.06, IWAE smaller)
    with torch.no_grad():
        elbo = vae.log_likelihood(x, gen(21))
        iwae = {k: vae.log_likelihood(x, gen(22 + k), n_importance=k) for k in (2, 8, 64)}
    m, se = mean_and_se(elbo - (exact - gap))
    assert abs(m) < N_SE * se, f"ELBO off its closed-form expectation by {m:.4f} ± {se:.4f}"
    previous = elbo - exact
    for k, bound in iwae.items():
        m, se = mean_and_se(bound - exact)
        assert m < N_SE * se, f"IWAE k={k} above log p(x): {m:.4f} ± {se:.4f}"  # a lower bound on average
        d, se_d = mean_and_se(bound - exact - previous)  # paired: same x
        assert d > N_SE * se_d, f"IWAE k={k} not tighter than the previous bound: {d:.4f} ± {se_d:.4f}"
        previous = bound - exact
    m, _ = mean_and_se(iwae[64] - exact)
    assert m > -gap / 4  # k = 64 closes most of the ELBO's gap


def test_iwae_not_below_elbo_on_a_random_vae():
    # A randomly initialized nonlinear VAE on arbitrary data: E[IWAE_k] ≥ E[ELBO] (Burda et al.).
    vae = fitted_vae(pixel_noise=True, seed=3)
    x = torch.randn(1000, 3, generator=gen(30)) * 2
    with torch.no_grad():
        elbo = vae.log_likelihood(x, gen(31))
        iwae = vae.log_likelihood(x, gen(32), n_importance=16)
    d, se = mean_and_se(iwae - elbo)
    assert torch.isfinite(iwae).all()
    assert d > -N_SE * se
    assert d > 0
