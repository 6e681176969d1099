"""Defects a hostile probe of the command line found (issue: trust), each fixed and checked here: --resume
refuses other options, --set sets one field or merges a block, bad input is one line and exit 2 (with or
without --debug), and eval refuses what it would have ignored."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_TILT, sets
from tiltkit.cli import build_parser, main
from tiltkit.commands import resolve_options
from tiltkit.config import TiltRunConfig
from tiltkit.samplers import SamplerKind


def resolved(*extra: str) -> TiltRunConfig:
    args = build_parser().parse_args(["train", "tilt", "--base", "b", "--out", "o", *extra])
    return resolve_options(args, TiltRunConfig)


def test_a_dotted_set_changes_one_field_and_a_mapping_merges():
    default = TiltRunConfig().train_sampler
    one = resolved("--set", "train_sampler.steps=5").train_sampler
    assert one.kind is SamplerKind.MALA and one.steps == 5 and one.step_size == default.step_size
    block = resolved("--set", "train_sampler={steps: 7}").train_sampler  # was: the whole block reset to ULA
    assert block.kind is SamplerKind.MALA and block.steps == 7 and block.step_size == default.step_size
    kwargs = resolved("--set", "energy_kwargs.depth=5").energy_kwargs
    assert kwargs["depth"] == 5 and kwargs["hidden"] == TiltRunConfig().energy_kwargs["hidden"]
    assert resolved("--set", "train_sampler.steps=5", "--set", "train_sampler.step_size=0.02").train_sampler.steps == 5


def test_resume_refuses_other_options_and_shorter_steps(tmp_path, base_run, capsys):
    run = tmp_path / "t"
    assert main(["train", "tilt", "--base", str(base_run), "--out", str(run), "--quiet", *sets(TINY_TILT)]) == 0
    config = (run / "config.yaml").read_text()
    for extra, match in ((["--set", "lr=0.5"], "lr (0.001 → 0.5)"),
                         (["--set", "train_sampler.kind=langevin"], "train_sampler"),
                         (["--steps", "3"], "has trained 6 steps already")):
        capsys.readouterr()
        assert main(["train", "tilt", "--out", str(run), "--resume", "--quiet", *extra]) == 2
        assert match in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == config  # not rewritten
    assert main(["train", "tilt", "--out", str(run), "--resume", "--quiet", *sets(TINY_TILT)]) == 0  # the same options
    assert main(["train", "tilt", "--out", str(run), "--resume", "--quiet", "--steps", "7"]) == 0
    assert "steps: 7" in (run / "config.yaml").read_text()


def test_bad_input_is_one_line_and_exit_2(tmp_path, base_run, capsys):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    cases = {
        "broken --set YAML": (["train", "base", "--data", "moons", "--out", str(tmp_path / "a"), "--set", "lr=[1,"],
                              "not valid YAML"),
        "binary --config": (["train", "base", "--data", "moons", "--out", str(tmp_path / "b"), "--config",
                             str(tmp_path / "binary.yaml")], "cannot read"),
        "mps absent": (["train", "base", "--data", "moons", "--out", str(tmp_path / "c"), "--device", "mps"],
                       "MPS"),
        "meta device": (["train", "base", "--data", "moons", "--out", str(tmp_path / "d"), "--device", "meta"],
                        "unknown device 'meta'"),
        "trajectory of a base run": (["sample", str(base_run), "--n", "4", "--trajectory", "--out",
                                      str(tmp_path / "t.png")], "need a tilted run"),
        "bogus metric on points": (["eval", str(base_run), "--metrics", "bogus"], "toy metrics"),
        "image metric on points": (["eval", str(base_run), "--metrics", "fid"], "toy metrics"),
        "one sample": (["eval", str(base_run), "--n", "1"], "at least 10 samples"),
        "seed past 64 bits": (["sample", str(base_run), "--n", "4", "--seed", str(2**70), "--out",
                               str(tmp_path / "s.npy")], "seed in [0, 2**63 - 1]"),
        "dotted set of a single value": (["train", "base", "--data", "moons", "--out", str(tmp_path / "e"),
                                          "--set", "lr.x=1"], "single value"),
    }
    for name, (argv, match) in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, (name, err)
    assert not (tmp_path / "d").exists()  # refused before the run directory is made


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path, capsys):
    argv = ["train", "base", "--data", "gaussians25", "--out", str(tmp_path / "a")]
    assert main(argv) == 2
    plain = capsys.readouterr().err
    assert main(["--debug", *argv]) == 2  # was: the exception raised, exit 1
    err = capsys.readouterr().err
    assert "Traceback" not in plain and "Traceback" in err and err.splitlines()[-1] == plain.strip()


def test_2d_runs_draw_scatter_plots_chain_paths_and_curves(tmp_path, base_run, capsys):
    run = tmp_path / "t"
    assert main(["train", "tilt", "--base", str(base_run), "--out", str(run), "--quiet", *sets(TINY_TILT)]) == 0
    assert f"trained tilt run: {run} (step 6, " in capsys.readouterr().out  # the summary line
    for extra, name in (([], "x.png"), (["--trajectory", "--every", "2"], "traj.png"), (["--compare-base"], "cmp.png")):
        assert main(["sample", str(run), "--n", "50", *extra, "--out", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    assert "loss, energies, energy gap E(x⁻) − E(x⁺), acceptance rate over 6 steps" in capsys.readouterr().out
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path)]) == 2  # not a run


def test_a_dotted_set_merges_into_the_chosen_energy_s_own_defaults():
    chosen = resolved("--set", "energy=conv-small", "--set", "energy_kwargs.width=4")
    assert chosen.energy == "conv-small" and chosen.energy_kwargs == {"width": 4}


def test_fid_of_two_sets_equals_eval_and_is_zero_for_a_set_with_itself(tmp_path, monkeypatch, capsys):
    import json

    import numpy as np

    from test_image_pipeline import TINY_VAE, squares

    monkeypatch.setenv("TILTKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = squares(200, rng), squares(60, rng)
    data = tmp_path / "squares.npz"
    np.savez(data, x=x, y=y, x_test=xt, y_test=yt)
    vae = tmp_path / "vae"
    assert main(["train", "base", "--data", str(data), "--model", "conv-vae", "--out", str(vae), "--steps", "5",
                 "--quiet", *sets(TINY_VAE)]) == 0
    assert main(["sample", str(vae), "--n", "60", "--out", str(tmp_path / "s.npz")]) == 0
    capsys.readouterr()
    assert main(["eval", str(vae), "--metrics", "fid", "--n", "60", "--quiet"]) == 0
    by_eval = json.loads(capsys.readouterr().out)["model"]["fid"]
    assert main(["fid", str(tmp_path / "s.npz"), f"{data}:test", "--domain", str(data), "--quiet"]) == 0
    by_fid = json.loads(capsys.readouterr().out)
    assert by_fid["fid"] == pytest.approx(by_eval, rel=1e-9) and by_fid["n_a"] == 60 and by_fid["n_b"] == 60
    assert main(["fid", f"{data}:test", f"{data}:test", "--domain", str(data), "--quiet"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["fid"]) < 1e-4  # sqrtm of a rank-deficient covariance: ~1e-6
    np.savez(tmp_path / "mu0.npz", mu=np.zeros(4), sigma=np.eye(4))  # pytorch-fid's statistics layout
    np.savez(tmp_path / "mu1.npz", mu=np.ones(4), sigma=np.eye(4))
    assert main(["fid", str(tmp_path / "mu0.npz"), str(tmp_path / "mu1.npz"), "--metrics", "inception-fid"]) == 0
    assert json.loads(capsys.readouterr().out)["inception_fid"] == pytest.approx(4.0)  # ‖Δμ‖², equal covariances
    assert main(["fid", str(tmp_path / "mu0.npz"), str(tmp_path / "mu1.npz"), "--metrics", "inception-fid",
                 "--exact"]) == 0
    assert json.loads(capsys.readouterr().out)["inception_fid"] == pytest.approx(4.0)
    assert main(["fid", str(tmp_path / "mu0.npz"), str(tmp_path / "mu1.npz")]) == 2  # domain FID needs images


def test_every_run_records_its_provenance(tmp_path, base_run):
    import yaml

    import torch

    run = tmp_path / "t"
    assert main(["train", "tilt", "--base", str(base_run), "--out", str(run), "--quiet", *sets(TINY_TILT)]) == 0
    record = yaml.safe_load((run / "config.yaml").read_text())["provenance"]
    assert record["tiltkit"] and record["torch"] == torch.__version__ and record["device"] == "cpu"
    assert record["started"][:4].isdigit() and "git_commit" in record  # a commit from a checkout, else None
    assert main(["train", "tilt", "--out", str(run), "--resume", "--quiet", "--steps", "7"]) == 0
    again = yaml.safe_load((run / "config.yaml").read_text())
    assert again["steps"] == 7 and again["provenance"]["started"] == record["started"]


def test_what_the_replayed_probe_found_is_one_line_and_exit_2(tmp_path, base_run, capsys):
    """benchmarks/cli_probe.py's first replay: a file where a folder belongs was a traceback or the wrong
    reason, an image run evaluated on points blamed its metrics, a missing array file was an "unknown set"."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (64, 1, 16, 16), dtype=np.uint8))
    np.savez(tmp_path / "nokey.npz", a=np.zeros((4, 1, 16, 16), np.uint8))
    (tmp_path / "a_file").write_text("a file")
    (tmp_path / "folder.npy").mkdir()
    images = tmp_path / "ivae"
    assert main(["train", "base", "--data", str(tmp_path / "images.npy"), "--model", "conv-vae", "--out", str(images),
                 "--steps", "1", "--quiet", "--set", "batch_size=16", "--set", "model_kwargs.latent_dim=4"]) == 0
    file = str(tmp_path / "a_file")
    cases = {
        "sample under a file": (["sample", str(base_run), "--n", "4", "--out", f"{file}/s.npy"], f"{file} is a file"),
        "sample into a folder": (["sample", str(base_run), "--n", "4", "--out", str(tmp_path / "folder.npy")],
                                 "is a folder"),
        "plot under a file": (["plot", str(base_run), "--out", f"{file}/c.png"], f"{file} is a file"),
        "ood under a file": (["ood", str(images), "--ood", "uniform", "--out", f"{file}/o"], "is a file"),
        "a file as the base run": (["train", "tilt", "--base", file, "--out", str(tmp_path / "t")],
                                   f"{file} is a file, not a run directory"),
        "a file as --out": (["train", "base", "--data", "moons", "--out", file], f"--out {file} is a file"),
        "an image run on points": (["eval", str(images), "--data", "moons"], "moons is a point set"),
        "OOD of a run on points": (["ood", str(base_run), "--ood", "uniform", "--out", str(tmp_path / "o")],
                                   "run on points (25gaussians): OOD scoring is for image runs"),
        "a missing array file": (["fid", str(tmp_path / "nope.npy"), str(tmp_path / "images.npy")],
                                 "nope.npy does not exist"),
        "an .npz without images": (["train", "base", "--data", str(tmp_path / "nokey.npz"), "--model", "conv-vae",
                                    "--out", str(tmp_path / "n")], "has keys ['a']: expected x or images or x_train"),
    }
    for name, (argv, match) in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, (name, err)
