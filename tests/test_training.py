"""Training loops: resume equals an uninterrupted run, divergence stops cleanly, checkpoints are safe."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_base_cfg, tiny_tilt_cfg
from tiltkit.errors import DivergenceError, UserError
from tiltkit import load
from tiltkit.training import contrastive, train_base, train_tilt
from tiltkit.training.checkpoint import RUN_FORMAT, latest_checkpoint, list_checkpoints, load_checkpoint
from tiltkit.training.distributed import Distributed
from tiltkit.training.rundir import MetricsLog


def weights(run):
    return {k: v.clone() for k, v in load(run, device="cpu").model.state_dict().items()}


def crash_at(monkeypatch, step):
    """Make the metrics write of `step` raise, as a crash between two checkpoints would."""
    original = MetricsLog.write

    def write(self, record):
        if record.get("step") == step:
            raise KeyboardInterrupt
        original(self, record)
    monkeypatch.setattr(MetricsLog, "write", write)


def metric_lines(run):
    """The logged metrics, wall-clock time left out."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time_s"} for line in lines]


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert metric_lines(a) == metric_lines(b)


def test_base_resume_equals_uninterrupted(tmp_path, monkeypatch):
    cfg = tiny_base_cfg(steps=50, checkpoint_every=20)
    train_base(cfg, tmp_path / "full", quiet=True)
    with monkeypatch.context() as m:
        crash_at(m, 27)  # checkpoint at 20; steps 21-26 are lost with the crash
        with pytest.raises(KeyboardInterrupt):
            train_base(cfg, tmp_path / "crashed", quiet=True)
    assert latest_checkpoint(tmp_path / "crashed").name == "step_0000020"
    train_base(cfg, tmp_path / "crashed", resume=True, quiet=True)
    assert_same_run(tmp_path / "full", tmp_path / "crashed")


@pytest.mark.parametrize("persistent", [False, True])
def test_tilt_resume_equals_uninterrupted(tmp_path, monkeypatch, base_run, persistent):
    cfg = tiny_tilt_cfg(base_run, persistent=persistent, steps=8, checkpoint_every=3)
    train_tilt(cfg, tmp_path / "full", quiet=True)
    with monkeypatch.context() as m:
        crash_at(m, 5)
        with pytest.raises(KeyboardInterrupt):
            train_tilt(cfg, tmp_path / "crashed", quiet=True)
    train_tilt(cfg, tmp_path / "crashed", resume=True, quiet=True)
    assert_same_run(tmp_path / "full", tmp_path / "crashed")
    if persistent:  # the replay buffer is part of the resumed state
        a = torch.load(latest_checkpoint(tmp_path / "full") / "state.pt", weights_only=True)["ranks"][0]["buffer"]
        b = torch.load(latest_checkpoint(tmp_path / "crashed") / "state.pt", weights_only=True)["ranks"][0]["buffer"]
        torch.testing.assert_close(a["store_0"], b["store_0"], rtol=0, atol=0)


def test_training_lowers_the_energy_of_data_relative_to_samples(tmp_path, base_run):
    cfg = tiny_tilt_cfg(base_run, steps=30, lr=3e-3)
    train_tilt(cfg, tmp_path / "tilt", quiet=True)
    gaps = [r["gap"] for r in metric_lines(tmp_path / "tilt")]
    assert sum(gaps[-10:]) / 10 > 0  # E(x⁻) − E(x⁺) > 0: data sits lower than the model's samples
    assert all("accept" in r and "grad_norm" in r for r in metric_lines(tmp_path / "tilt"))


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, base_run):
    real, calls = contrastive.contrastive_loss, []

    def poisoned(energy, x_pos, x_neg, alpha):
        out = real(energy, x_pos, x_neg, alpha)
        calls.append(1)
        if len(calls) >= 5:
            out.loss = out.loss * float("nan")
            out.metrics["loss"] = float("nan")
        return out
    monkeypatch.setattr(contrastive, "contrastive_loss", poisoned)
    with pytest.raises(DivergenceError, match="step 5"):
        train_tilt(tiny_tilt_cfg(base_run), tmp_path / "tilt", quiet=True)
    last = latest_checkpoint(tmp_path / "tilt")
    assert last.name == "step_0000003"
    model = load(tmp_path / "tilt", device="cpu").model
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoints_keep_the_newest_two_and_skip_half_written(tmp_path, base_run):
    train_tilt(tiny_tilt_cfg(base_run, steps=9, checkpoint_every=2), tmp_path / "t", quiet=True)
    assert [p.name for p in list_checkpoints(tmp_path / "t")] == ["step_0000008", "step_0000009"]
    (tmp_path / "t" / "checkpoints" / ".tmp-crashed").mkdir()  # a write killed midway
    assert latest_checkpoint(tmp_path / "t").name == "step_0000009"


def test_truncated_checkpoint_is_refused_clearly(tmp_path, base_run):
    run = tmp_path / "t"
    train_tilt(tiny_tilt_cfg(base_run, steps=3), run, quiet=True)
    ckpt = latest_checkpoint(run)
    data = (ckpt / "weights.safetensors").read_bytes()
    (ckpt / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="weights.safetensors does not match its SHA-256"):
        load(run)


def test_state_file_loads_with_weights_only(base_run):
    state = torch.load(latest_checkpoint(base_run) / "state.pt", weights_only=True)
    assert state["step"] == 40 and "optimizer" in state and "rng" in state


def test_load_checkpoint_rejects_a_mismatched_model(base_run):
    from tiltkit.generators import MLPVAE
    with pytest.raises(UserError, match="does not match"):
        load_checkpoint(latest_checkpoint(base_run), {"base": MLPVAE(2, hidden=17, depth=2)})


def test_early_stopping_stops_after_patience_and_saves_that_step(tmp_path):
    from tiltkit.training.loop import EarlyStopping, run_steps

    scores = {2: 5.0, 4: 3.0, 6: 4.0, 8: 3.5, 10: 1.0}  # best at 4, then two evaluations without improvement
    stopper, saved, bests = EarlyStopping(patience=2), [], []

    def step_fn(step):
        if step in scores and stopper.update(step, scores[step]):
            bests.append(step)
        return {"loss": float(step)}

    run = SimpleNamespace(dist=Distributed(), gen=torch.Generator(), log=MetricsLog(tmp_path), out=tmp_path,
                          save=saved.append, cfg=SimpleNamespace(log_images_every=0), board=None,
                          preview=None)  # the parts of a RunState the loop uses
    run_steps(run, 1, 10, step_fn, checkpoint_every=5, quiet=True, should_stop=stopper.should_stop)
    assert bests == [2, 4] and saved == [5, 8]  # the regular checkpoint at 5, then the stop at 8
    assert stopper.state_dict() == {"best": 3.0, "best_step": 4, "bad": 2}
    resumed = EarlyStopping(patience=2)
    resumed.load_state_dict(stopper.state_dict())
    assert resumed.should_stop() and not EarlyStopping(patience=0).should_stop()


def test_base_lr_warmup_multiplies_the_cosine_schedule():
    from tiltkit.config import BaseRunConfig, from_dict
    from tiltkit.training.base import cosine_lr

    flat = from_dict(BaseRunConfig, {"lr": 1e-3, "lr_final": 1e-3, "steps": 100, "warmup_steps": 4}, "base")
    assert [cosine_lr(flat)(t) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    decay = {"lr": 1e-3, "lr_final": 1e-4, "steps": 100}
    plain, warm = (cosine_lr(from_dict(BaseRunConfig, {**decay, **w}, "base")) for w in ({}, {"warmup_steps": 10}))
    assert warm(4) == pytest.approx(0.5 * plain(4)) and warm(50) == plain(50)
    for bad in ({"warmup_steps": -1}, {"grad_clip": 0.0}):
        with pytest.raises(UserError, match=next(iter(bad))):
            from_dict(BaseRunConfig, bad, "base")


@pytest.mark.parametrize("persistent", [False, True])
def test_a_format_1_checkpoint_resumes_like_today_s(tmp_path, base_run, persistent):
    """Checkpoints written before manifests and per-rank state (one process: "rng": [data, chains], "buffer"
    at the top) load and resume to the same weights."""
    cfg = tiny_tilt_cfg(base_run, persistent=persistent, steps=8, checkpoint_every=3)
    train_tilt(cfg, tmp_path / "full", quiet=True)
    old_cfg = tiny_tilt_cfg(base_run, persistent=persistent, steps=6, checkpoint_every=3)
    train_tilt(old_cfg, tmp_path / "old", quiet=True)
    ckpt = latest_checkpoint(tmp_path / "old")
    new = torch.load(ckpt / "state.pt", weights_only=True)
    old = {"step": new["step"], "optimizer": new["optimizer"], "data_shape": new["data_shape"],
           "early_stopping": new["early_stopping"], "rng": [new["rng"], new["ranks"][0]["rng"]],
           **({"buffer": new["ranks"][0]["buffer"]} if persistent else {})}
    torch.save(old, ckpt / "state.pt")
    (ckpt / "manifest.json").unlink()
    (ckpt.parent / RUN_FORMAT).unlink()  # a run from before manifests has no FORMAT marker either
    train_tilt(cfg, tmp_path / "old", resume=True, quiet=True)
    assert_same_run(tmp_path / "full", tmp_path / "old")
