"""The Python API for your own generator: as_base, fit_tilt, Run.sample, load; the --base-module command
line; bad input. The user-base path is checked against the built-in tilt run, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tiltkit
from conftest import TINY_TILT, logged_step, tiny_tilt_cfg
from tiltkit import UserError
from tiltkit.cli import main
from tiltkit.data.source import DataSource
from tiltkit.training import TILT, train_tilt
from tiltkit.training.checkpoint import read_state, latest_checkpoint

ROOT = Path(__file__).parents[1]
OPTIONS = {k: v for k, v in TINY_TILT.items() if k != "steps"}


class Decoder(nn.Module):
    """Wraps tiltkit's own MLP VAE as a user's plain module: noise (B, 2) -> x (B, 2)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z)


def toy_generator(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))


def points(n: int = 500) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(3)) * 0.5 + 1.0


def test_a_wrapped_vae_decoder_equals_the_built_in_tilt(tmp_path, base_run):
    built_in = train_tilt(tiny_tilt_cfg(base_run), tmp_path / "tilt", quiet=True)
    vae = tiltkit.load(base_run, device="cpu").model
    x_train = DataSource("25gaussians").points("train", 2000)  # the base run's n_train
    run = tiltkit.fit_tilt(tiltkit.as_base(Decoder(vae), noise_shape=(2,)), x_train, tmp_path / "mine",
                           steps=TINY_TILT["steps"], seed=0, device="cpu", **OPTIONS)
    for name, value in built_in.energy.state_dict().items():
        assert torch.equal(value, run.model.energy.state_dict()[name]), name
    noise = vae.sample_noise(16, torch.Generator().manual_seed(5))
    assert torch.equal(built_in(noise), run.model(noise))  # U(ε), the chains' energy
    theirs = tiltkit.load(tmp_path / "tilt", device="cpu").sample(300, seed=7)
    assert torch.equal(theirs, run.sample(300, seed=7))  # chains and samples
    assert run.method.kind == "tilt-module" and tiltkit.load(tmp_path / "tilt").method is TILT


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "own"
    run = tiltkit.fit_tilt(tiltkit.as_base(toy_generator(), noise_shape=(2,)), points(), out, steps=4, seed=0,
                           device="cpu", **OPTIONS)
    return out, run


def test_load_in_a_fresh_process_gives_identical_samples(own_run, tmp_path):
    out, run = own_run
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import tiltkit
        from test_api import toy_generator
        run = tiltkit.load({str(out)!r}, base=toy_generator(), device="cpu")
        np.save({str(tmp_path / 'x.npy')!r}, run.sample(200, seed=11).numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), run.sample(200, seed=11).numpy())
    assert not torch.equal(run.sample(50, seed=1), run.sample(50, seed=2))
    assert run.sample(50, seed=1).shape == (50, 2)


def test_load_refuses_another_generator_and_a_missing_one(own_run):
    out, _ = own_run
    with pytest.raises(UserError, match="other weights: 4 of 4 tensors differ"):
        tiltkit.load(out, base=toy_generator(seed=1))
    with pytest.raises(UserError, match="records no factory: pass the generator"):
        tiltkit.load(out)
    with pytest.raises(UserError, match="samples of shape"):
        tiltkit.load(out, base=nn.Sequential(nn.Linear(2, 3)))
    with pytest.raises(UserError, match="another base: 2 tensor names differ"):
        tiltkit.load(out, base=nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2), nn.Tanh(), nn.Linear(2, 2)))
    assert main(["sample", str(out), "--n", "5", "--out", "/tmp/never.npy"]) == 2


def test_evaluate_from_python_names_the_data_of_an_array_run(own_run):
    _, run = own_run
    with pytest.raises(UserError, match="trained on an array given in Python"):
        run.evaluate()
    result = run.evaluate(data="25gaussians", n=300)
    assert result["n"] == 300 and result["mmd"] > 0 and result["modes"] >= 0


def test_scores_offered_by_the_base(own_run):
    out, run = own_run
    assert set(run.score(points(30))) == {"energy"}
    gen = toy_generator()
    with_density = tiltkit.as_base(gen, (2,), log_likelihood=lambda x: -0.5 * x.pow(2).sum(1))
    scores = tiltkit.load(out, base=with_density).score(points(30))
    np.testing.assert_allclose(scores["tilted"], scores["elbo"] + scores["energy"], rtol=1e-6)
    with pytest.raises(UserError, match="iwae is not offered"):
        run.score(points(30), scores="iwae")
    # a capability is asked for only by the feature that needs it: chains in x need an exact density
    in_data = tiltkit.load(out, base=with_density).with_sampling(data_space=True).sample(20, seed=0)
    assert in_data.shape == (20, 2) and torch.isfinite(in_data).all()
    with pytest.raises(UserError, match="exact density.*'exact-density' capability; ModuleBase does not have it"):
        run.with_sampling(data_space=True)


def test_fit_tilt_killed_and_resumed_equals_an_uninterrupted_run(tmp_path):
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import tiltkit
        from test_api import toy_generator, points, OPTIONS
        opts = {{**OPTIONS, "checkpoint_every": 1, "persistent": True}}
        tiltkit.fit_tilt(tiltkit.as_base(toy_generator(), (2,)), points(), sys.argv[1], steps=40, seed=0,
                         device="cpu", resume=True, **opts)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed")], env=env)
    while logged_step(tmp_path / "killed") < 12:
        assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "killed")], env=env, check=True)
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "whole")], env=env, check=True)
    a = tiltkit.load(tmp_path / "killed", base=toy_generator()).model.energy.state_dict()
    b = tiltkit.load(tmp_path / "whole", base=toy_generator()).model.energy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    buffers = [read_state(latest_checkpoint(tmp_path / r))["ranks"][0]["buffer"] for r in ("killed", "whole")]
    assert all(torch.equal(buffers[0][k], buffers[1][k]) for k in buffers[0] if isinstance(buffers[0][k], torch.Tensor))


def test_resume_refuses_other_options_and_other_data(own_run, tmp_path):
    base = tiltkit.as_base(toy_generator(), (2,))
    tiltkit.fit_tilt(base, points(), tmp_path / "r", steps=2, seed=0, device="cpu", **OPTIONS)
    with pytest.raises(UserError, match="other options: lr"):
        tiltkit.fit_tilt(base, points(), tmp_path / "r", steps=4, resume=True, **{**OPTIONS, "lr": 0.5})
    with pytest.raises(UserError, match="not the array"):
        tiltkit.fit_tilt(base, points() + 1, tmp_path / "r", steps=4, seed=0, resume=True, device="cpu", **OPTIONS)
    run = tiltkit.fit_tilt(base, points(), tmp_path / "r", steps=4, seed=0, resume=True, device="cpu", **OPTIONS)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert run.cfg.steps == 4 and len(lines) == 4 and tiltkit.load(tmp_path / "r", base=base).cfg.steps == 4


def test_a_user_energy_module_trains_and_must_be_passed_again(tmp_path):
    base = tiltkit.as_base(toy_generator(), (2,))
    torch.manual_seed(0)
    energy = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1), nn.Flatten(0))
    run = tiltkit.fit_tilt(base, points(), tmp_path / "e", steps=3, seed=0, device="cpu", energy=energy, **OPTIONS)
    assert run.cfg.energy == "custom"
    with pytest.raises(UserError, match="your own energy module"):
        tiltkit.load(tmp_path / "e", base=toy_generator())
    again = tiltkit.load(tmp_path / "e", base=toy_generator(), energy=nn.Sequential(
        nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1), nn.Flatten(0)))
    assert torch.equal(again.sample(20, seed=0), run.sample(20, seed=0))


@pytest.mark.parametrize("make, match", [
    (lambda: tiltkit.as_base(toy_generator(), noise_shape=(0,)), "tuple of positive ints"),
    (lambda: tiltkit.as_base(toy_generator(), noise_shape="2"), "tuple of positive ints"),
    (lambda: tiltkit.as_base(toy_generator(), noise_shape=(3,)), "fails on noise of shape"),
    (lambda: tiltkit.as_base(nn.Sequential(nn.Linear(2, 2), nn.Softplus(), nn.Linear(2, 2)).apply(
        lambda m: nn.init.constant_(m.weight, float("nan")) if isinstance(m, nn.Linear) else None), (2,)),
     "non-finite values"),
    (lambda: tiltkit.as_base(lambda z: z, (2,)), "torch.nn.Module"),
    (lambda: tiltkit.as_base(nn.Sequential(nn.Linear(2, 784), nn.Unflatten(1, (1, 28, 28))), (2,)), "pixel_range"),
    (lambda: tiltkit.fit_tilt(tiltkit.as_base(toy_generator(), (2,)), torch.zeros(10, 3), "/tmp/x"), "shape"),
    (lambda: tiltkit.fit_tilt(tiltkit.as_base(toy_generator(), (2,)), torch.zeros(10, 2, dtype=torch.int64),
                              "/tmp/x"), "floating-point"),
    (lambda: tiltkit.fit_tilt(tiltkit.as_base(toy_generator(), (2,)), np.full((10, 2), np.nan), "/tmp/x"),
     "10 of 10 examples hold NaN"),
    (lambda: tiltkit.fit_tilt(toy_generator(), points(), "/tmp/x"), "tiltkit.as_base"),
    (lambda: tiltkit.fit_tilt(tiltkit.as_base(toy_generator(), (2,)), points(), "/tmp/x", use_mu=True),
     "use_mu .* needs a base with the 'decode-mean' capability"),
    (lambda: tiltkit.fit_tilt(tiltkit.as_base(toy_generator(), (2,)), points(), "/tmp/x", lrr=1), "unknown key 'lrr'"),
])
def test_bad_input_is_one_clear_error(make, match):
    with pytest.raises(UserError, match=match):
        make()
    assert not Path("/tmp/x").exists()


# ---------------------------------------------------------------- the command line: --base-module

FACTORY = '''
import torch
from torch import nn

def make_generator():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
    g.noise_shape = (2,)
    return g

def broken():
    raise RuntimeError("no weights file")

def not_a_module():
    return 42
'''


def test_base_module_on_the_command_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(FACTORY)
    np.save(tmp_path / "pts.npy", points().numpy())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sets = [f"--set={k}={v}" for k, v in (("batch_size", 32), ("train_sampler", "{kind: mala, steps: 3, step_size: 0.01}"),
                                          ("sample_sampler", "{kind: mala, steps: 5, step_size: 0.01}"))]
    assert main(["train", "tilt", "--base-module", "my_models:make_generator", "--data", "pts.npy", "--out", "run",
                 "--steps", "3", "--device", "cpu", "--quiet", *sets]) == 0
    for out in ("a.npy", "b.npy"):
        assert main(["sample", "run", "--n", "100", "--out", out, "--seed", "3"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    capsys.readouterr()
    assert main(["eval", "run", "--n", "200"]) == 0 and '"mmd"' in capsys.readouterr().out
    run = tiltkit.load(tmp_path / "run", device="cpu")  # the factory rebuilds the base
    assert run.cfg.base_module == "my_models:make_generator" and run.cfg.data == "pts.npy"
    for spec, match in (("my_models", "expected MODULE:FACTORY"), ("nowhere:f", "cannot import nowhere"),
                        ("my_models:broken", "raised RuntimeError: no weights file"),
                        ("my_models:not_a_module", "returned a int"), ("my_models:missing", "has no function")):
        assert main(["train", "tilt", "--base-module", spec, "--data", "pts.npy", "--out", "bad"]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    assert main(["train", "tilt", "--base-module", "my_models:make_generator", "--out", "bad"]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- the examples, at a tiny size

def run_example(name: str, *args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *launcher, str(ROOT / "examples" / name), *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_example_own_2d_generator(tmp_path):
    r = run_example("tilt_own_2d_generator.py", "--out", str(tmp_path / "a"), "--vae-steps", "50", "--steps", "3",
                    "--samples", "200")
    assert r.returncode == 0, r.stderr
    assert "MMD² to held-out data" in r.stdout
    r = run_example("tilt_own_2d_generator.py", "--out", str(tmp_path / "a"), "--samples", "200", "--reload")
    assert "reloaded in a new process: samples identical: True" in r.stdout, r.stderr


@pytest.mark.slow
def test_example_own_2d_generator_under_torchrun(tmp_path):
    r = run_example("tilt_own_2d_generator.py", "--out", str(tmp_path / "a"), "--vae-steps", "50", "--steps", "3",
                    "--samples", "200", "--batch-size", "32", nproc=2)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("MMD² to held-out data") == 1  # rank 0 alone reports
    state = read_state(latest_checkpoint(tmp_path / "a"))
    sums = [rank["weights_sum"] for rank in state["ranks"]]
    assert len(sums) == 2 and sums[0] == sums[1]  # DDP: one set of weights on both ranks
    steps = [line for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 3  # one line per step: rank 0 writes


@pytest.mark.slow
def test_example_own_image_decoder(tmp_path):
    r = run_example("tilt_own_image_decoder.py", "--out", str(tmp_path / "b"), "--vae-steps", "5", "--steps", "2",
                    "--samples", "50", "--n-train", "200")
    assert r.returncode == 0, r.stderr
    assert "MMD² to test images" in r.stdout and "reload identical: True" in r.stdout
