"""The command line end to end on a tiny setting, and one clear line + exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_BASE, TINY_TILT, sets
from tiltkit.cli import main


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "points.npy"
    rng = np.random.default_rng(0)
    np.save(path, np.concatenate([rng.normal(-1, 0.1, (300, 2)), rng.normal(1, 0.1, (300, 2))]).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, user_file):
    root = tmp_path_factory.mktemp("cli")
    base_opts = {k: v for k, v in TINY_BASE.items() if k not in ("steps", "n_train")}
    assert main(["train", "base", "--data", str(user_file), "--model", "vae", "--out", str(root / "vae"),
                 "--steps", "30", "--seed", "1", "--device", "cpu", "--quiet", *sets(base_opts)]) == 0
    tilt_opts = {k: v for k, v in TINY_TILT.items() if k != "steps"}
    assert main(["train", "tilt", "--base", str(root / "vae"), "--out", str(root / "tilt"), "--steps", "4",
                 "--seed", "2", "--quiet", *sets(tilt_opts)]) == 0
    return root


def test_runs_hold_config_checkpoints_and_metrics(cli_runs):
    for run in ("vae", "tilt"):
        assert (cli_runs / run / "config.yaml").is_file()
        assert (cli_runs / run / "metrics.jsonl").is_file()
        assert list((cli_runs / run / "checkpoints").glob("step_*/weights.safetensors"))
    assert "seed: 2" in (cli_runs / "tilt" / "config.yaml").read_text()


@pytest.mark.parametrize("run", ["vae", "tilt"])
def test_sample_and_eval_on_a_user_file(cli_runs, user_file, run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(cli_runs / run), "--n", "50", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (50, 2) and np.isfinite(x).all()
    capsys.readouterr()
    assert main(["eval", str(cli_runs / run), "--data", str(user_file), "--n", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mmd"] < 1 and result["emd"] > 0
    assert "eval" in (cli_runs / run / "metrics.jsonl").read_text().splitlines()[-1]


def test_resume_extends_a_run(cli_runs, tmp_path):
    import shutil
    run = tmp_path / "vae"
    shutil.copytree(cli_runs / "vae", run)
    assert main(["train", "base", "--out", str(run), "--resume", "--steps", "35", "--quiet"]) == 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 35


def test_console_script_runs(cli_runs, tmp_path):
    out = tmp_path / "s.npy"
    proc = subprocess.run([sys.executable, "-m", "tiltkit", "sample", str(cli_runs / "tilt"), "--n", "8",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == (8, 2)


def bad_inputs(cli_runs, user_file, tmp):
    np.save(tmp / "rank3.npy", np.zeros((5, 2, 2)))  # read as five 2×2 gray images
    np.save(tmp / "rank5.npy", np.zeros((5, 2, 2, 2, 2)))
    np.save(tmp / "nan.npy", np.array([[0.0, np.nan], [1.0, 1.0]]))
    np.save(tmp / "empty.npy", np.zeros((0, 2)))
    (tmp / "half").mkdir()
    (tmp / "half" / "config.yaml").write_text("kind: base\ndata: 25gaussians\n")
    (tmp / "extra.yaml").write_text("stepz: 3\n")
    (tmp / "occupied").mkdir()
    (tmp / "occupied" / "keep.txt").write_text("mine")
    vae = str(cli_runs / "vae")
    return {
        "unknown dataset": (["train", "base", "--data", "gaussians25", "--out", str(tmp / "a")],
                            "25gaussians, swissroll"),
        "wrong rank": (["train", "base", "--data", str(tmp / "rank5.npy"), "--out", str(tmp / "b")], "rank 2"),
        "point model on images": (["train", "base", "--data", str(tmp / "rank3.npy"), "--model", "vae",
                                   "--out", str(tmp / "b2")], "takes points (N, D)"),
        "nan": (["train", "base", "--data", str(tmp / "nan.npy"), "--out", str(tmp / "c")], "NaN"),
        "no rows": (["train", "base", "--data", str(tmp / "empty.npy"), "--out", str(tmp / "d")], "at least 2 rows"),
        "missing file": (["train", "base", "--data", str(tmp / "nope.npy"), "--out", str(tmp / "e")],
                         "does not exist"),
        "missing run dir": (["sample", str(tmp / "nowhere"), "--n", "4", "--out", str(tmp / "x.npy")],
                            "does not exist"),
        "half-written run": (["sample", str(tmp / "half"), "--n", "4", "--out", str(tmp / "x.npy")],
                             "no checkpoint"),
        "not a run": (["train", "tilt", "--base", str(tmp), "--out", str(tmp / "f")], "not a tiltkit run"),
        "unknown config key": (["train", "base", "--data", "moons", "--config", str(tmp / "extra.yaml"),
                                "--out", str(tmp / "g")], "unknown key 'stepz'"),
        "unknown --set key": (["train", "tilt", "--base", vae, "--out", str(tmp / "h"), "--set", "alfa=1"],
                              "unknown key 'alfa'"),
        "zero steps": (["train", "base", "--data", "moons", "--out", str(tmp / "i"), "--steps", "0"],
                       "positive integer"),
        "negative step size": (["train", "tilt", "--base", vae, "--out", str(tmp / "j"),
                                "--set", "train_sampler={step_size: -0.1}"], "step_size must be positive"),
        "zero --n": (["sample", vae, "--n", "0", "--out", str(tmp / "x.npy")], "positive integer"),
        "out not empty": (["train", "base", "--data", "moons", "--out", str(tmp / "occupied")], "not empty"),
        "resume of nothing": (["train", "base", "--out", str(tmp / "k"), "--resume"], "does not exist"),
        "wrong output suffix": (["sample", vae, "--n", "4", "--out", str(tmp / "x.txt")], "expected a .npy"),
        "unknown sampler": (["train", "tilt", "--base", vae, "--out", str(tmp / "l"),
                             "--set", "train_sampler={kind: gibbs}"], "invalid value 'gibbs'"),
    }


BAD = ["unknown dataset", "wrong rank", "nan", "no rows", "missing file", "missing run dir", "half-written run",
       "not a run", "unknown config key", "unknown --set key", "zero steps", "negative step size", "zero --n",
       "out not empty", "resume of nothing", "wrong output suffix", "unknown sampler"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(case, cli_runs, user_file, tmp_path, capsys):
    argv, message = bad_inputs(cli_runs, user_file, tmp_path)[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "occupied" / "keep.txt").read_text() == "mine"


def test_bad_input_from_the_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tiltkit", "train", "base", "--data", "nonsense",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown data set 'nonsense'" in proc.stderr


def test_divergence_exit_code_names_the_step(cli_runs, tmp_path, capsys):
    # A learning rate of 1e30 blows the energy up within a few steps.
    code = main(["train", "tilt", "--base", str(cli_runs / "vae"), "--out", str(tmp_path / "t"), "--quiet",
                 *sets({**TINY_TILT, "lr": 1e30, "alpha": 0.0, "grad_clip": 1e30, "checkpoint_every": 1})])
    err = capsys.readouterr().err
    assert code == 3 and "diverged at step" in err and err.count("\n") == 1


def test_version_matches_the_package_metadata(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tiltkit {importlib.metadata.version('tiltkit')}"
