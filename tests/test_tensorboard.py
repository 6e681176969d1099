"""`--log tensorboard`: the event files hold every step's metrics as metrics.jsonl has them (a resumed run's
re-run steps once), and an image run's sample grids are the run's own samples."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_TILT, sets, tiny_tilt_cfg
from test_divergence import poison
from tiltkit import load
from tiltkit.cli import main
from tiltkit.training import train_tilt

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def events(run):
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def step_lines(run) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "event" not in r]


def test_the_event_file_holds_each_step_s_metrics_once_across_a_resume(tmp_path, base_run):
    run = tmp_path / "t"
    args = ["train", "tilt", "--base", str(base_run), "--out", str(run), "--quiet", "--log", "tensorboard"]
    assert main([*args, *sets(TINY_TILT)]) == 0  # 6 steps, checkpoints at 3 and 6
    shutil.rmtree(run / "checkpoints" / "step_0000006")  # killed after step 6 was logged, before its checkpoint
    assert main(["train", "tilt", "--out", str(run), "--resume", "--quiet", "--log", "tensorboard", "--steps", "8"]) == 0
    acc, lines = events(run), step_lines(run)
    assert [r["step"] for r in lines] == list(range(1, 9))
    for name in ("loss", "e_pos", "e_neg", "accept", "grad_norm"):
        logged = [(e.step, e.value) for e in acc.Scalars(f"train/{name}")]
        assert [s for s, _ in logged] == list(range(1, 9))  # steps 4–6 of the first try purged, not doubled
        np.testing.assert_allclose([v for _, v in logged], [r[name] for r in lines], rtol=1e-6)


def test_a_rollback_purges_the_steps_it_runs_again(tmp_path, monkeypatch, base_run):
    poison(monkeypatch, {5})  # step 5 diverges: back to the checkpoint of step 3, step 4 runs again
    run = tmp_path / "t"
    train_tilt(tiny_tilt_cfg(base_run, on_divergence="rollback", log="tensorboard"), run, quiet=True)
    logged = [(e.step, e.value) for e in events(run).Scalars("train/e_neg")]
    lines = step_lines(run)
    assert [s for s, _ in logged] == [r["step"] for r in lines] == list(range(1, 7))
    np.testing.assert_allclose([v for _, v in logged], [r["e_neg"] for r in lines], rtol=1e-6)


def test_an_image_run_logs_grids_of_its_own_samples(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (64, 1, 16, 16), dtype=np.uint8))
    run = tmp_path / "r"
    assert main(["train", "base", "--data", str(tmp_path / "images.npy"), "--model", "conv-vae", "--out", str(run),
                 "--steps", "5", "--log", "tensorboard", "--quiet", "--set", "batch_size=16",
                 "--set", "model_kwargs.latent_dim=4", "--set", "log_images_every=2"]) == 0
    grids = events(run).Images("samples")
    assert [g.step for g in grids] == [2, 4, 5]  # every 2 steps and the last
    grid = np.asarray(Image.open(io.BytesIO(grids[-1].encoded_image_string)))[..., 0]
    x = load(run).images(64, seed=0)  # the preview draws from a generator seeded with the run's seed
    assert torch.equal(torch.from_numpy(grid.copy()), x.reshape(8, 8, 16, 16).permute(0, 2, 1, 3).reshape(128, 128))


def test_without_the_option_there_is_no_event_file(tmp_path, base_run):
    run = tmp_path / "t"
    assert main(["train", "tilt", "--base", str(base_run), "--out", str(run), "--quiet", *sets(TINY_TILT)]) == 0
    assert not (run / "tensorboard").exists()
