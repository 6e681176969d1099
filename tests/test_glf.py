"""GLF: the stop-gradient of the latent flow's NLL, the loss against a hand computation, training on
tiny images, exact latent inverses, and a tiny run through the command line."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import sets
from test_flow import brute_logdet, gen, perturb, write_idx_squares
from tiltkit.cli import main
from tiltkit.data.images import PixelRange
from tiltkit.generators import GENERATORS, GLF, MLPGLF
from tiltkit import load
from tiltkit.training import BASE

SHAPE = (1, 16, 16)


def tiny_glf(seed: int = 0, **kw) -> GLF:
    torch.manual_seed(seed)
    return GLF(SHAPE, **{"latent_dim": 4, "width": 4, "hidden": 16, **kw})


def corner_squares(n: int, seed: int) -> torch.Tensor:
    """16×16 images in [0, 1]: a bright 5×5 square in one of 4 corners on faint noise."""
    g = gen(seed)
    x = 0.1 * torch.rand(n, *SHAPE, generator=g)
    corner = torch.randint(4, (n,), generator=g)
    for i, c in enumerate(corner.tolist()):
        top, left = 2 + 9 * (c // 2), 2 + 9 * (c % 2)
        x[i, 0, top:top + 5, left:left + 5] = 0.9
    return x


def grads(model: GLF, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    model.loss(x).loss.backward()
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def tiny_mlp_glf(seed: int = 0, **kw) -> MLPGLF:
    torch.manual_seed(seed)
    return MLPGLF(3, **{"latent_dim": 2, "hidden": 16, "depth": 2, "flow_hidden": 16, **kw})


@pytest.mark.parametrize("variant", ["images", "points"])
def test_flow_nll_trains_the_flow_but_never_the_encoder(variant):
    make, x = {"images": (tiny_glf, corner_squares(8, 0)),
               "points": (tiny_mlp_glf, torch.randn(8, 3, generator=gen(0)))}[variant]
    without = grads(perturb(make(beta=0.0), 0.1, 1), x)
    with_flow = grads(perturb(make(beta=1.0), 0.1, 1), x)
    for name, g in with_flow.items():
        if name.startswith("flow."):
            assert without[name] is None or without[name].abs().max() == 0
            assert g is not None
        else:  # encoder and decoder: the reconstruction alone, to the last bit
            assert g is not None and g.equal(without[name]), name
    assert sum(g.abs().sum() for n, g in with_flow.items() if n.startswith("flow.")) > 0


def test_loss_and_log_likelihood_match_a_hand_computation():
    model = perturb(tiny_glf(beta=0.5), 0.1, 1).eval()
    x = corner_squares(5, 2)
    out = model.loss(x)
    z = model.encoder(x)
    recon = F.binary_cross_entropy(torch.sigmoid(model.decoder(z)).double(), x.double(), reduction="sum") / 5
    zd = z.detach().double()
    flow = copy.deepcopy(model.flow).double()
    log_p = []
    for i in range(5):  # log p_f(z) = log N(f(z); 0, I) + log|det ∂f/∂z|, from the full Jacobian
        eps = flow(zd[i:i + 1])[0]
        log_p.append(-0.5 * eps.pow(2).sum() - 2 * math.log(2 * math.pi) + brute_logdet(lambda v: flow(v)[0],
                                                                                         zd[i:i + 1]))
    log_p = torch.stack(log_p)
    assert out.metrics["recon"] == pytest.approx(recon.item(), rel=1e-5)
    assert out.metrics["flow_nll"] == pytest.approx(-log_p.mean().item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(recon.item() - 0.5 * log_p.mean().item(), rel=1e-5)
    torch.testing.assert_close(model.log_likelihood(x).double(), log_p, atol=1e-4, rtol=1e-5)


def test_mlp_glf_loss_decode_and_likelihood_in_data_units():
    model = perturb(tiny_mlp_glf(beta=0.5), 0.1, 1).eval()
    x = torch.randn(5, 3, generator=gen(2)) * torch.tensor([4.0, 1.0, 0.5]) + 3.0
    model.standardize.fit(x)
    y = (x - x.mean(0)) / x.std(0)
    z = model.encoder(y)
    recon = 0.5 * (model.decoder(z) - y).pow(2).sum(1)
    eps, logdet = model.flow(z)
    log_pf = -0.5 * eps.pow(2).sum(1) - math.log(2 * math.pi) + logdet  # d = 2
    out = model.loss(x)
    torch.testing.assert_close(out.loss, recon.mean() - 0.5 * log_pf.mean())
    torch.testing.assert_close(model.log_likelihood(x), log_pf)
    torch.testing.assert_close(model.decode(model.encode(x)), x.mean(0) + x.std(0) * model.decoder(z))
    assert GENERATORS["glf-mlp"] is MLPGLF and not getattr(MLPGLF, "image_model", False)


def test_decode_of_encode_is_the_reconstruction_and_the_flow_inverts():
    model = perturb(tiny_glf(), 0.2, 1).eval()
    x = corner_squares(6, 3)
    with torch.no_grad():
        z = model.encoder(x)
        eps = model.encode(x)
        torch.testing.assert_close(model.flow.inverse(eps), z, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.decode(eps), torch.sigmoid(model.decoder(z)), atol=1e-5, rtol=0)
        noise = model.sample_noise(6, gen(4))
        torch.testing.assert_close(model.flow(model.flow.inverse(noise))[0], noise, atol=1e-5, rtol=0)


def test_decode_is_differentiable_in_eps():
    model = perturb(tiny_glf(), 0.2, 1).double().eval()
    eps = model.sample_noise(2, gen(5)).requires_grad_(True)
    assert torch.autograd.gradcheck(model.decode, (eps,))
    x = model.decode(eps)
    assert x.shape == (2, *SHAPE) and ((x > 0) & (x < 1)).all()


def test_protocol_extras_and_temperature():
    model = tiny_glf()
    assert GENERATORS["glf"] is GLF and GLF.image_model and model.pixel_range is PixelRange.UNIT
    noise = model.sample_noise(20000, gen(6), temperature=0.7)
    assert noise.shape == (20000, 4) and noise.std().item() == pytest.approx(0.7, abs=0.005)
    torch.testing.assert_close(model.noise_energy(noise[:3]), 0.5 * noise[:3].pow(2).sum(1))
    assert model.latent(noise) is noise
    with pytest.raises(ValueError, match="not supported"):
        GLF((1, 30, 30))


def test_loss_decreases_on_tiny_images():
    model = tiny_glf(latent_dim=8, width=8, hidden=32)
    x = corner_squares(64, 7)
    initial_flow = copy.deepcopy(model.flow)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data_gen, losses = gen(8), []
    for _ in range(40):
        out = model.loss(x[torch.randint(64, (32,), generator=data_gen)])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.metrics["loss"])
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    model.eval()
    with torch.no_grad():  # the flow has learned the encoder's codes: better than the untrained flow on them
        z = model.encoder(x)
        eps, logdet = initial_flow(z)
        initial_nll = -(-0.5 * eps.pow(2).sum(1) - 4 * math.log(2 * math.pi) + logdet).mean()
        assert -model.latent_log_prob(z).mean() < initial_nll - 1.0


def test_glf_train_base_run_loads_and_decodes(tmp_path):
    data = write_idx_squares(tmp_path / "idx")
    options = {"model_kwargs": {"latent_dim": 8, "width": 4, "hidden": 16}, "batch_size": 16, "checkpoint_every": 3}
    assert main(["train", "base", "--data", str(data), "--model", "glf", "--out", str(tmp_path / "glf"),
                 "--steps", "3", "--device", "cpu", "--quiet", *sets(options)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "glf" / "metrics.jsonl").read_text().splitlines()]
    assert any({"loss", "recon", "flow_nll"} <= set(r) for r in lines)
    run = load(tmp_path / "glf", device="cpu")
    model = run.model
    assert run.method is BASE and isinstance(model, GLF) and not model.training
    with torch.no_grad():
        x = model.decode(model.sample_noise(5, gen(0)))
    assert x.shape == (5, 1, 28, 28) and ((x >= 0) & (x <= 1)).all()
