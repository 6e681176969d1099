"""Glow and RealNVP: exact inverses, log-determinants against brute-force Jacobians, the bits/dim
formula against a hand computation, a RealNVP fit of a known Gaussian, a tilted flow sampled in noise
space and in data space against a closed form, and a tiny Glow run (trained, tilted, sampled)."""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from conftest import sets, tiny_base_cfg
from test_tilt import QuadraticEnergy, assert_gaussian
from test_image_pipeline import squares
from tiltkit import TiltedModel, UserError, load
from tiltkit.cli import main
from tiltkit.data.images import PixelRange
from tiltkit.data.source import DataSource
from tiltkit.energies import SmallConvEnergy
from tiltkit.generators import GENERATORS, ConvVAE, FlowInDataSpace, Glow, RealNVP, VectorCouplingFlow
from tiltkit.generators.flow import SCALE_BOUND, ActNorm, AffineCoupling, InvConv1x1, Squeeze
from tiltkit.samplers import SamplerConfig, SamplerKind
from tiltkit.samplers import noise as nz
from tiltkit.training import BASE, train_base
from tiltkit.training.checkpoint import load_checkpoint, save_checkpoint

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def perturb(module: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """Add N(0, scale²) to every parameter, so zero-initialized convs and identity layers do something."""
    g = gen(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def brute_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det ∂fn/∂x| of one example x (1, ...), fn's output flattened, from the full Jacobian."""
    jac = jacobian(lambda v: fn(v.view_as(x)).flatten(), x.flatten())
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabs


def small_glow(shape=(2, 8, 8), seed=0, **kw) -> Glow:
    """A 2-block Glow after ActNorm's data init and a perturbation of every weight, in eval mode."""
    torch.manual_seed(seed)
    glow = Glow(shape, n_blocks=2, n_couplings=2, hidden=8, **kw)
    glow.log_density(torch.rand(32, *shape, generator=gen(seed + 1)))  # training mode: ActNorm data init
    return perturb(glow, 0.05, seed + 2).eval()


# -- layers ---------------------------------------------------------------------------------------
def make_layer(name: str):
    torch.manual_seed(0)
    layer = {"actnorm": lambda: ActNorm(4), "conv1x1": lambda: InvConv1x1(4),
             "coupling": lambda: AffineCoupling(4, 8), "bounded": lambda: AffineCoupling(4, 8, "bounded"),
             "additive": lambda: AffineCoupling(4, 8, "additive"),
             "squeeze": Squeeze}[name]().double()
    return perturb(layer, 0.3, 1).eval()


@pytest.mark.parametrize("name", ["actnorm", "conv1x1", "coupling", "bounded", "additive", "squeeze"])
def test_layer_inverse_and_logdet_match_brute_force(name):
    layer = make_layer(name)
    x = torch.randn(3, 4, 4, 4, generator=gen(2), dtype=F64)
    y, logdet = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, atol=1e-10, rtol=0)
    if name == "squeeze":  # channel 4c + 2i + j holds pixel (2h + i, 2w + j) of channel c
        assert y.shape == (3, 16, 2, 2) and y[1, 4 * 2 + 2 * 1 + 0, 1, 0] == x[1, 2, 3, 0]
    else:
        assert not torch.allclose(y, x)
    for i in range(3):  # per example: the coupling's log-det depends on x
        expected = brute_logdet(lambda v: layer(v)[0], x[i:i + 1])
        torch.testing.assert_close(logdet[i], expected, atol=1e-9, rtol=0)
    if name in ("coupling", "bounded"):
        assert logdet.std() > 1e-3
    if name == "additive":  # volume-preserving
        assert (logdet == 0).all()


def test_the_bounded_coupling_contracts_like_glow_and_bounds_each_inverse_step():
    """log σ = −B·sigmoid(−(r + 2)): a fresh coupling (r = t = 0) scales x_b by exp(−B·sigmoid(−2)), and
    whatever the network says log σ stays within (−B, 0) (= −B once the sigmoid rounds to 1), so one inverse
    step magnifies x_b by at most e^B; the affine coupling's 1/σ has no such bound."""
    x = torch.randn(3, 4, 4, 4, generator=gen(6), dtype=F64)
    fresh = AffineCoupling(4, 8, "bounded").double()
    y, logdet = fresh(x)
    log_sigma = -SCALE_BOUND / (1 + math.exp(2.0))
    torch.testing.assert_close(y, torch.cat([x[:, :2], x[:, 2:] * math.exp(log_sigma)], 1))
    torch.testing.assert_close(logdet, torch.full((3,), 2 * 4 * 4 * log_sigma, dtype=F64))
    for coupling in ("bounded", "affine"):
        layer = AffineCoupling(4, 8, coupling).double()
        with torch.no_grad():
            layer.net[-1].bias[2:].fill_(-1e3)  # the log-scale half of the output: a very small σ
        log_scale = layer._split(x)[3]
        if coupling == "bounded":
            assert -SCALE_BOUND <= log_scale.min() and log_scale.max() < 0 and torch.isfinite(layer.inverse(x)).all()
            assert layer.inverse(x)[:, 2:].abs().max() <= x[:, 2:].abs().max() * math.exp(SCALE_BOUND)
        else:
            assert log_scale.min() < -900 and not torch.isfinite(layer.inverse(x)).all()


def test_actnorm_data_init_standardizes_its_first_training_batch_once():
    norm = ActNorm(3)
    x = 2.0 + 5.0 * torch.randn(64, 3, 5, 5, generator=gen(0))
    y, _ = norm(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert norm.initialized.item() == 1.0 and "initialized" in norm.state_dict()
    before = norm.bias.detach().clone()
    norm(torch.randn(64, 3, 5, 5, generator=gen(1)))  # a second batch leaves the init alone
    torch.testing.assert_close(norm.bias, before)
    fresh = ActNorm(3)
    fresh.load_state_dict(norm.state_dict())
    fresh(x + 10.0)  # loaded as initialized: no re-init on a shifted batch
    torch.testing.assert_close(fresh.bias, before)
    assert ActNorm(3).eval()(x)[0].equal(x)  # eval mode never initializes


def test_inv_conv_starts_as_a_rotation_and_its_lu_logdet_is_exact():
    torch.manual_seed(0)
    conv = InvConv1x1(6).double()
    w = conv.weight().detach()
    torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=F64), atol=1e-6, rtol=0)
    perturb(conv, 0.5, 1)
    w = conv.weight().detach()
    assert torch.linalg.slogdet(w)[1].item() == pytest.approx(conv.log_s.sum().item(), abs=1e-10)
    assert conv.perm.equal(conv.perm.abs()) and conv.perm.sum() == 6  # P stays a permutation


# -- Glow -------------------------------------------------------------------------------------------
def test_glow_shapes_for_mnist_and_bad_shapes():
    torch.manual_seed(0)
    glow = Glow((1, 28, 28), n_couplings=1, hidden=4)
    assert glow.noise_shapes == [(2, 14, 14), (8, 7, 7)] and glow.pixel_range is PixelRange.UNIT
    noise = glow.sample_noise(3, gen(0))
    assert [tuple(t.shape) for t in noise] == [(3, 2, 14, 14), (3, 8, 7, 7)]
    assert glow.decode(noise).shape == (3, 1, 28, 28) and glow.latent(noise).shape == (3, 784)
    assert GENERATORS["glow"] is Glow and Glow.image_model
    with pytest.raises(ValueError, match="divisible by 8"):
        Glow((1, 28, 28), n_blocks=3)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Glow((28, 28))
    with pytest.raises(ValueError, match="n_bits"):
        Glow((1, 28, 28), n_bits=9)


@pytest.mark.parametrize("coupling", ["affine", "bounded", "additive"])
def test_glow_decode_inverts_encode(coupling):
    glow = small_glow(coupling=coupling)
    x = torch.rand(5, 2, 8, 8, generator=gen(3))
    with torch.no_grad():
        eps = glow.encode(x)
        torch.testing.assert_close(glow.decode(eps), x, atol=1e-4, rtol=0)
        noise = glow.sample_noise(5, gen(4))
        for a, b in zip(glow.encode(glow.decode(noise)), noise):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("coupling", ["affine", "bounded", "additive"])
def test_glow_logdet_and_density_match_brute_force(coupling):
    glow = small_glow(coupling=coupling).double()
    x = torch.rand(2, 2, 8, 8, generator=gen(5), dtype=F64)
    _, _, logdet = glow.flow(x - 0.5)
    for i in range(2):
        xi = x[i:i + 1]
        # the flow x -> (z_0, z_top), without the priors
        flat_z = brute_logdet(lambda v: torch.cat([z.flatten(1) for z in glow.flow(v - 0.5)[0]], 1), xi)
        torch.testing.assert_close(logdet[i], flat_z, atol=1e-8, rtol=0)
        # the whole density, the priors' μ_i(h), σ_i(h) included: log p(x) = log N(ε; 0, I) + log|det ∂ε/∂x|
        eps = glow.latent(glow.encode(xi))
        log_p = -0.5 * eps.pow(2).sum() - 0.5 * eps.numel() * math.log(2 * math.pi)
        log_p = log_p + brute_logdet(lambda v: glow.latent(glow.encode(v)), xi)
        torch.testing.assert_close(glow.log_density(xi)[0], log_p, atol=1e-8, rtol=0)


def test_bits_per_dim_matches_a_hand_computation_at_init():
    """A fresh Glow is linear, y -> A·y: ActNorm is the identity, 1×1 convs rotations, couplings scale x_b
    by sigmoid(2), and the zero-initialized priors are N(0, I). So log p(x̃) = log N(A·y; 0, I) + log|det A|,
    with log|det A| = n_couplings·Σ_blocks (C_i/2)·H_i·W_i·log sigmoid(2)."""
    torch.manual_seed(0)
    glow = Glow((1, 8, 8), n_blocks=2, n_couplings=2, hidden=8).double().eval()
    k = torch.randint(0, 256, (3, 1, 8, 8), generator=gen(6)).double()
    x = (k / 255).float().double()  # as the loaders give it, through float32
    y = (k + torch.rand(x.shape, generator=gen(7), dtype=F64)) / 256 - 0.5
    a = jacobian(lambda v: torch.cat([z.flatten(1) for z in glow.flow(v.view(1, 1, 8, 8))[0]], 1)[0],
                 torch.zeros(64, dtype=F64))
    log_det_a = torch.linalg.slogdet(a)[1]
    assert log_det_a.item() == pytest.approx(2 * (2 * 16 + 4 * 4) * math.log(torch.sigmoid(torch.tensor(2.0))))
    z = y.flatten(1) @ a.T
    log_p = -0.5 * z.pow(2).sum(1) - 32 * math.log(2 * math.pi) + log_det_a
    bpd = -(log_p - 64 * 8 * math.log(2)) / (64 * math.log(2))
    torch.testing.assert_close(glow.bits_per_dim(x, gen(7)), bpd, atol=1e-9, rtol=0)
    torch.testing.assert_close(glow.log_likelihood(x, gen(7)), -bpd * 64 * math.log(2), atol=1e-8, rtol=0)
    out = glow.loss(x, gen(7))
    assert out.loss.item() == pytest.approx(bpd.mean().item()) == out.metrics["bits_per_dim"]


def test_dequantization_keeps_each_pixel_in_its_cell():
    glow = Glow((1, 8, 8), n_couplings=1, hidden=4, n_bits=8)
    k = torch.arange(256.0).view(4, 1, 8, 8)
    x_tilde = glow.dequantize((k / 255).float(), gen(0))
    assert (x_tilde >= k / 256).all() and (x_tilde < (k + 1) / 256).all()
    coarse = Glow((1, 8, 8), n_couplings=1, hidden=4, n_bits=5).dequantize((k / 255).float(), gen(0))
    assert ((coarse * 32).floor() == (k / 255 * 31).round()).all()


def test_temperature_scales_the_noise():
    glow = Glow((1, 8, 8), n_couplings=1, hidden=4)
    noise = glow.sample_noise(3000, gen(0), temperature=0.7)
    assert glow.latent(noise).std().item() == pytest.approx(0.7, abs=0.005)
    assert RealNVP(2).sample_noise(50000, gen(1), temperature=0.7).std().item() == pytest.approx(0.7, abs=0.005)


def test_glow_decode_is_differentiable_in_the_noise():
    glow = small_glow(shape=(1, 4, 4)).double()
    noise = tuple(t.requires_grad_(True) for t in glow.sample_noise(2, gen(8)))
    assert torch.autograd.gradcheck(lambda *eps: glow.decode(eps), noise)


def test_glow_is_a_tilting_base_over_its_noise_tuple():
    glow = small_glow(shape=(1, 8, 8))
    torch.manual_seed(0)
    tilted = TiltedModel(glow, SmallConvEnergy((1, 8, 8), width=4))
    noise = tilted.sample_noise(4, gen(11))
    u, grads = nz.energy_and_grad(tilted, noise)
    expected = 0.5 * sum(t.pow(2).flatten(1).sum(1) for t in noise) + tilted.energy(glow.decode(noise))
    torch.testing.assert_close(u, expected.detach())
    assert [g.shape for g in grads] == [t.shape for t in noise] and all(g.abs().sum() > 0 for g in grads)
    result = tilted.sample(SamplerConfig(SamplerKind.LANGEVIN, steps=3, step_size=0.01), noise, gen(12))
    assert isinstance(result.noise, tuple) and tilted.output(result.noise).shape == (4, 1, 8, 8)


def test_glow_checkpoint_round_trip_keeps_init_and_lu_buffers(tmp_path):
    glow = small_glow()
    save_checkpoint(tmp_path, 1, {"base": glow}, {})
    torch.manual_seed(123)  # a different random rotation in every 1×1 conv
    other = Glow((2, 8, 8), n_blocks=2, n_couplings=2, hidden=8)
    load_checkpoint(tmp_path / "checkpoints" / "step_0000001", {"base": other})
    x = torch.rand(4, 2, 8, 8, generator=gen(9))
    other.log_density(x + 3.0)  # training mode, but ActNorm is loaded as initialized: nothing changes
    other.eval()
    torch.testing.assert_close(other.log_density(x), glow.log_density(x))
    noise = glow.sample_noise(4, gen(10))
    torch.testing.assert_close(other.decode(noise), glow.decode(noise))


def test_glow_clamp_output_is_the_clamped_decode_and_passes_no_gradient_outside_the_box():
    glow, clamped = small_glow(), small_glow(clamp_output=True)  # the same weights
    noise = tuple(3 * t for t in glow.sample_noise(4, gen(11)))  # wide draws: some pixels leave [0, 1]
    x = glow.decode(noise)
    assert ((x < 0) | (x > 1)).any()
    torch.testing.assert_close(clamped.decode(noise), x.clamp(0, 1))
    eps = tuple(t.clone().requires_grad_(True) for t in noise)
    out = clamped.decode(eps)
    grad = torch.autograd.grad(out[(x < 0) | (x > 1)].sum(), eps, allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in grad)


# -- RealNVP ----------------------------------------------------------------------------------------
def test_vector_coupling_flow_inverse_logdet_and_masks():
    torch.manual_seed(0)
    flow = perturb(VectorCouplingFlow(5, n_couplings=3, hidden=8, n_hidden_layers=1).double(), 0.5, 1)
    x = torch.randn(4, 5, generator=gen(2), dtype=F64)
    z, logdet = flow(x)
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-10, rtol=0)
    for i in range(4):
        torch.testing.assert_close(logdet[i], brute_logdet(lambda v: flow(v)[0], x[i:i + 1]), atol=1e-9, rtol=0)
    y = flow[0](x)[0]  # the first coupling keeps the even features, the second the odd ones
    assert y[:, ::2].equal(x[:, ::2]) and not torch.allclose(y[:, 1::2], x[:, 1::2])
    assert flow[1](x)[0][:, 1::2].equal(x[:, 1::2])
    with pytest.raises(ValueError, match="dim ≥ 2"):
        VectorCouplingFlow(1, 2, 8, 1)


def test_realnvp_log_likelihood_is_exact_in_data_units():
    torch.manual_seed(0)
    model = perturb(RealNVP(2, n_couplings=4, hidden=16).double(), 0.3, 1)
    data = torch.randn(500, 2, generator=gen(2), dtype=F64) * torch.tensor([3.0, 0.5], dtype=F64) + 4.0
    model.standardize.fit(data)
    x = data[:3]
    torch.testing.assert_close(model.decode(model.encode(x)), x, atol=1e-10, rtol=0)
    ll = model.log_likelihood(x)
    for i in range(3):  # log p(x) = log N(ε; 0, I) + log|det ∂ε/∂x|, standardization included
        eps = model.encode(x[i:i + 1])
        expected = -0.5 * eps.pow(2).sum() - math.log(2 * math.pi) + brute_logdet(model.encode, x[i:i + 1])
        torch.testing.assert_close(ll[i], expected, atol=1e-9, rtol=0)


def test_realnvp_fit_recovers_a_correlated_gaussian():
    mean = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.0]])
    chol = torch.linalg.cholesky(cov)
    x_train = mean + torch.randn(4000, 2, generator=gen(0)) @ chol.T
    x_test = mean + torch.randn(4000, 2, generator=gen(1)) @ chol.T
    torch.manual_seed(0)
    model = RealNVP(2, n_couplings=4, hidden=32)
    model.standardize.fit(x_train)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data_gen = gen(2)
    for _ in range(500):
        out = model.loss(x_train[torch.randint(4000, (256,), generator=data_gen)])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    true = torch.distributions.MultivariateNormal(mean, cov)
    with torch.no_grad():
        assert model.log_likelihood(x_test).mean().item() == pytest.approx(true.log_prob(x_test).mean().item(),
                                                                           abs=0.05)
        samples = model.decode(model.sample_noise(20000, gen(3)))
    torch.testing.assert_close(samples.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.08, rtol=0)


def test_realnvp_trains_through_train_base_with_fitted_standardization(tmp_path):
    cfg = tiny_base_cfg(data="25gaussians", model="realnvp", steps=10, checkpoint_every=10,
                        model_kwargs={"n_couplings": 2, "hidden": 16})
    model = train_base(cfg, tmp_path / "run", quiet=True)
    x_train = DataSource.of(cfg).tensor("train", cfg.n_train)
    torch.testing.assert_close(model.standardize.shift, x_train.mean(0))  # fitted to the training points
    torch.testing.assert_close(model.standardize.scale, x_train.std(0))
    loaded = load(tmp_path / "run", device="cpu").model
    noise = loaded.sample_noise(5, gen(0))
    torch.testing.assert_close(loaded.decode(noise), model.decode(noise))


# -- a tilted flow against a closed form, sampled in its noise and in data space ----------------------
def test_tilted_flow_matches_closed_form_in_noise_space_and_in_data_space():
    """A fresh RealNVP is x = b + a⊙ε (identity couplings, standardization shift b and scale a). Tilted
    by E(x) = ½(x − c)ᵀP(x − c), the law of x is Gaussian with precision Λ = diag(a)⁻² + P and mean
    Λ⁻¹(diag(a)⁻²b + Pc). Chains over ε (U = ½‖ε‖² + E(f⁻¹(ε))) and chains in x itself
    (FlowInDataSpace: U = −log p_flow(x) + E(x), tilting paper §3.1) must both reach it; MALA is exact."""
    torch.manual_seed(0)
    flow = RealNVP(2, n_couplings=2, hidden=8)
    a, b = torch.tensor([2.0, 0.5]), torch.tensor([1.0, -1.0])
    flow.standardize.shift.copy_(b)
    flow.standardize.scale.copy_(a)
    c, prec = torch.tensor([0.0, 0.5]), torch.tensor([[1.0, 0.3], [0.3, 2.0]])
    energy = QuadraticEnergy(c, prec)
    lam = torch.diag(a.double() ** -2) + prec.double()
    cov = torch.linalg.inv(lam)
    mean = cov @ (b.double() / a.double() ** 2 + prec.double() @ c.double())
    # eigenvalues of the precision: in ε about 1.5 and 5.0, in x about 1.2 and 6.0; η = 0.2 keeps
    # ηλ_max/2 ≤ 0.6 and 300 steps contract the slow direction by (1 − 0.12)³⁰⁰
    mala = SamplerConfig(SamplerKind.MALA, steps=300, step_size=0.2)
    in_noise = TiltedModel(flow, energy)
    chains = in_noise.sample(mala, 20_000, gen(1))
    with torch.no_grad():
        assert_gaussian(in_noise.output(chains.noise), mean, cov)
    in_data = TiltedModel(FlowInDataSpace(flow), energy)
    chains = in_data.sample(mala, 20_000, gen(2))
    assert chains.acceptance_rate > 0.5
    assert_gaussian(chains.noise, mean, cov)
    with pytest.raises(UserError, match="exact density"):
        FlowInDataSpace(ConvVAE((1, 16, 16), latent_dim=2, width=4))


# -- a tiny Glow run through the command line, from IDX files ------------------------------------------
def write_idx_squares(root: Path, n_train: int = 64, n_test: int = 16) -> Path:
    """Square images (test_image_pipeline.squares) as gzipped IDX files, the MNIST format."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = squares(n, rng)
        for kind, arr, magic in (("images-idx3", x, 0x803), ("labels-idx1", y.astype(np.uint8), 0x801)):
            header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
            with gzip.open(root / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())
    return root


def test_glow_train_base_run_loads_and_decodes(tmp_path):
    data = write_idx_squares(tmp_path / "idx")
    options = {"model_kwargs": {"n_couplings": 2, "hidden": 8}, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 4}
    assert main(["train", "base", "--data", str(data), "--model", "glow", "--out", str(tmp_path / "glow"),
                 "--steps", "4", "--device", "cpu", "--quiet", *sets(options)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "glow" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["bits_per_dim"] < 12 and r["loss"] == r["bits_per_dim"] for r in lines if "loss" in r)
    run = load(tmp_path / "glow", device="cpu")
    model = run.model
    assert run.method is BASE and isinstance(model, Glow) and not model.training
    assert all(m.initialized.item() == 1.0 for m in model.modules() if isinstance(m, ActNorm))
    with torch.no_grad():
        x = model.decode(model.sample_noise(6, gen(0), temperature=0.7))
        assert x.shape == (6, 1, 28, 28) and torch.isfinite(x).all()
        images = torch.from_numpy(squares(4, np.random.default_rng(1))[0]).float()[:, None] / 255
        torch.testing.assert_close(model.decode(model.encode(images)), images, atol=1e-4, rtol=0)
        assert torch.isfinite(model.log_likelihood(images, gen(1))).all()

    # a latent EBM on it, sampled in the flow's noise and in data space (--space data)
    tilt = {"energy": "conv-small", "energy_kwargs": {"width": 4}, "batch_size": 8, "checkpoint_every": 2,
            "train_sampler": {"kind": "langevin", "steps": 2, "step_size": 0.01},
            "sample_sampler": {"kind": "langevin", "steps": 3, "step_size": 0.01}, "eval_every": 0, "compile": "off"}
    assert main(["train", "tilt", "--base", str(tmp_path / "glow"), "--out", str(tmp_path / "tilt"), "--steps", "2",
                 "--device", "cpu", "--quiet", *sets(tilt)]) == 0
    for space in ("noise", "data"):
        out = tmp_path / f"{space}.npz"
        assert main(["sample", str(tmp_path / "tilt"), "--n", "4", "--space", space, "--steps", "2", "--step-size",
                     "1e-4", "--out", str(out), "--device", "cpu"]) == 0
        assert np.load(out)["x"].shape == (4, 1, 28, 28)
    assert main(["sample", str(tmp_path / "glow"), "--n", "4", "--space", "data", "--out",
                 str(tmp_path / "x.npz")]) == 2  # a base run has no tilted sampler
