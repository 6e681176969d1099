"""The divergence policy: stop with a logged event, or roll back to the last good checkpoint with a smaller
learning rate and step size and new seeds, and finish."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_base_cfg, tiny_tilt_cfg
from test_training import metric_lines
from tiltkit.errors import DivergenceError
from tiltkit.generators import MLPVAE
from tiltkit.training import contrastive, train_base, train_tilt
from tiltkit.training.checkpoint import latest_checkpoint


def poison(monkeypatch, at: set[int]):
    """Make contrastive_loss non-finite on the calls numbered in `at` (1-based)."""
    real, calls = contrastive.contrastive_loss, []

    def poisoned(*args):
        out = real(*args)
        calls.append(1)
        if len(calls) in at:
            out.loss = out.loss * float("nan")
            out.metrics["loss"] = float("nan")
        return out
    monkeypatch.setattr(contrastive, "contrastive_loss", poisoned)


def events(run) -> list[dict]:
    return [r for r in metric_lines(run) if "event" in r]


def state(run) -> dict:
    return torch.load(latest_checkpoint(run) / "state.pt", weights_only=True)


def test_stop_logs_the_event_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, base_run):
    poison(monkeypatch, set(range(5, 100)))
    with pytest.raises(DivergenceError, match="step 5: non-finite loss"):
        train_tilt(tiny_tilt_cfg(base_run), tmp_path / "tilt", quiet=True)
    assert events(tmp_path / "tilt") == [{"step": 5, "event": "diverged", "reason": "non-finite loss", "rollbacks": 0}]
    assert latest_checkpoint(tmp_path / "tilt").name == "step_0000003"


def test_rollback_reloads_the_last_checkpoint_and_finishes(tmp_path, monkeypatch, base_run):
    poison(monkeypatch, {7})  # step 7 diverges once; the checkpoint of step 6 is the last good one
    cfg = tiny_tilt_cfg(base_run, steps=12, on_divergence="rollback")
    train_tilt(cfg, tmp_path / "tilt", quiet=True)
    run = tmp_path / "tilt"
    assert events(run) == [{"step": 6, "event": "rollback", "diverged_at": 7, "reason": "non-finite loss",
                            "rollbacks": 1, "lr_scale": 0.5, "step_size_scale": 0.5}]
    assert [r["step"] for r in metric_lines(run) if "event" not in r] == list(range(1, 13))
    final = state(run)
    assert final["step"] == 12 and final["divergence"] == {"rollbacks": 1, "lr_scale": 0.5, "step_scale": 0.5}
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr * 0.5)
    monkeypatch.undo()
    train_tilt(cfg, tmp_path / "clean", quiet=True)
    clean, rolled = metric_lines(tmp_path / "clean"), [r for r in metric_lines(run) if "event" not in r]
    assert clean[:6] == rolled[:6]  # the same run up to the checkpoint
    assert clean[6]["e_neg"] != rolled[6]["e_neg"]  # then other chains: new seeds, smaller steps


def test_rollback_gives_up_after_max_rollbacks(tmp_path, monkeypatch, base_run):
    poison(monkeypatch, set(range(5, 100)))  # every step from the fifth call on diverges
    cfg = tiny_tilt_cfg(base_run, steps=12, on_divergence="rollback", max_rollbacks=2, rollback_factor=0.1)
    with pytest.raises(DivergenceError):
        train_tilt(cfg, tmp_path / "tilt", quiet=True)
    kinds = [(e["event"], e["rollbacks"]) for e in events(tmp_path / "tilt")]
    assert kinds == [("rollback", 1), ("rollback", 2), ("diverged", 2)]
    assert [e.get("lr_scale") for e in events(tmp_path / "tilt")][:2] == [pytest.approx(0.1), pytest.approx(0.01)]


def test_exploding_energy_counts_as_divergence(tmp_path, base_run):
    with pytest.raises(DivergenceError, match="above max_energy 1e-06"):
        train_tilt(tiny_tilt_cfg(base_run, max_energy=1e-6), tmp_path / "tilt", quiet=True)


def test_base_rollback_scales_the_scheduled_learning_rate(tmp_path, monkeypatch):
    real, calls = MLPVAE.loss, []

    def loss(self, *args):
        out = real(self, *args)
        calls.append(1)
        if len(calls) == 25:
            out.metrics["loss"] = float("inf")
        return out
    monkeypatch.setattr(MLPVAE, "loss", loss)
    cfg = tiny_base_cfg(on_divergence="rollback")
    train_base(cfg, tmp_path / "base", quiet=True)
    lrs = [r["lr"] for r in metric_lines(tmp_path / "base") if "event" not in r]
    assert len(lrs) == cfg.steps and lrs[-1] == pytest.approx(cfg.lr_final * 0.5)  # the cosine floor, halved
