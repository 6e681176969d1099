"""benchmarks/reproduce.py: the paper-scale settings are appendix B's, and the smoke scale runs the whole path
(train both bases and their EBMs, sample, domain and Inception FID, the table) and resumes without redoing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_image_pipeline import squares
from tiltkit.config import BaseRunConfig, TiltRunConfig, from_dict

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import reproduce  # noqa: E402


@pytest.mark.parametrize("base", ["vae", "glf"])
def test_paper_scale_is_appendix_b(base, tmp_path):
    opts = reproduce.base_options(reproduce.Scale.PAPER, base, "fashion-mnist", 60_000, "cuda")
    cfg = from_dict(BaseRunConfig, opts, "paper")
    assert cfg.steps == 256 * 469 and cfg.batch_size == 128 and cfg.lr == cfg.lr_final == 1e-3  # 256 epochs
    assert cfg.model_kwargs["latent_dim"] == {"vae": 100, "glf": 64}[base] and cfg.precision.value == "bf16"
    if base == "vae":
        assert cfg.model == "conv-vae" and cfg.model_kwargs["likelihood"] == "bernoulli"
    else:
        assert cfg.model_kwargs["n_couplings"] == 4 and cfg.model_kwargs["hidden"] == 256
    tilt = from_dict(TiltRunConfig, reproduce.tilt_options(reproduce.Scale.PAPER, base, tmp_path, "cuda"), "paper")
    assert tilt.energy == "conv" and tilt.energy_kwargs == {"channels": [64, 128], "blocks": 3}  # 3 + 3 blocks
    assert tilt.steps == {"vae": 1000, "glf": 200}[base] and tilt.alpha == 0.1
    assert (tilt.train_sampler.steps, tilt.train_sampler.step_size) == (60, 0.01)
    assert (tilt.sample_sampler.steps, tilt.sample_sampler.step_size) == (100, 0.01)
    assert reproduce.base_options(reproduce.Scale.PAPER, base, "mnist", 60_000, "cpu")["precision"] == "32"


def test_smoke_scale_runs_every_stage_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = squares(240, rng), squares(120, rng)
    np.savez(tmp_path / "squares.npz", x=x, y=y, x_test=xt, y_test=yt)
    argv = [sys.executable, str(BENCH / "reproduce.py"), "--scale", "smoke", "--data", str(tmp_path / "squares.npz"),
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r.json"),
            "--markdown", str(tmp_path / "B.md")]
    first = subprocess.run(argv, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert list(r["stages"]) == ["squares:classifier"] + [f"squares:{b}{s}" for b in ("vae", "glf")
                                                          for s in ("", "+ebm", ":sample", ":fid")]
    table = r["table"]["squares"]
    assert list(table) == ["vae", "vae+ebm", "glf", "glf+ebm"]
    for row in table.values():
        assert np.isfinite(row["fid"]) and np.isfinite(row["inception_fid"]) and row["inception_fid"] > 0
    samples = np.load(tmp_path / "runs" / "squares" / "vae-samples.npz")
    assert samples["vae"].shape == samples["vae+ebm"].shape == (16, 1, 28, 28)
    doc = (tmp_path / "B.md").read_text()
    row = f"| squares | vae+ebm | {table['vae+ebm']['inception_fid']:.1f} | – | {table['vae+ebm']['fid']:.2f} |"
    assert "<!-- reproduce-smoke:begin -->" in doc and row in doc  # no paper number for this set
    again = subprocess.run(argv, capture_output=True, text=True)  # every stage done: nothing is run again
    assert again.returncode == 0 and again.stdout.count("done earlier") == len(r["stages"])
    assert json.loads((tmp_path / "r.json").read_text())["table"] == r["table"]
