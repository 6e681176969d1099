"""Data-parallel training under torchrun (gloo, 2 CPU processes): same weights as one process on the doubled
batch, a replay buffer per rank, rank 0 alone writing, SIGTERM through torchrun, resume with as many processes."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from conftest import TINY_TILT, sets, tiltkit, tiltkit_process, tiny_base_cfg, wait_for_step
from test_debm import DEBM
from test_image_pipeline import squares
from tiltkit.training import train_base
from tiltkit.training.checkpoint import latest_checkpoint
from tiltkit.training.distributed import Distributed
from tiltkit import load

FLOW = {"model": "realnvp", "model_kwargs": {}, "n_train": 2000, "checkpoint_every": 10}  # exact NLL: no noise


def lines(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_global_batch_is_split_across_ranks_in_order():
    x = torch.arange(100 * 6).float().view(100, 1, 2, 3)
    one = Distributed().draw_batch(x, 8, torch.Generator().manual_seed(0), hflip=True)
    parts = [Distributed(r, 4).draw_batch(x, 2, torch.Generator().manual_seed(0), hflip=True) for r in range(4)]
    torch.testing.assert_close(torch.cat(parts), one, rtol=0, atol=0)
    assert Distributed(1, 4).rank_seed(5) != Distributed(0, 4).rank_seed(5) == 5


def test_draw_batch_flips_about_half_the_images_along_their_width():
    x = torch.arange(50 * 6).float().view(50, 1, 2, 3)
    batch = Distributed().draw_batch(x, 400, torch.Generator().manual_seed(0), hflip=True)
    source = x[(batch[:, 0, 0, :].min(1).values // 6).long()]  # each row's image: its smallest value / 6
    flipped = (batch == source.flip(-1)).flatten(1).all(1)
    kept = (batch == source).flatten(1).all(1)
    assert (flipped ^ kept).all() and 160 < flipped.sum().item() < 240


@pytest.mark.slow
def test_two_processes_give_the_weights_of_one_on_the_doubled_batch(tmp_path):
    args = ["train", "base", "--data", "25gaussians", "--steps", "20", "--device", "cpu", *sets(FLOW)]
    one = tiltkit(*args, "--out", str(tmp_path / "one"), "--set", "batch_size=128")
    two = tiltkit(*args, "--out", str(tmp_path / "two"), "--set", "batch_size=64", nproc=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert two.stdout.count("trained base run") == 1  # rank 0 alone reports
    a, b = load(tmp_path / "one", device="cpu").model.state_dict(), load(tmp_path / "two", device="cpu").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    la, lb = lines(tmp_path / "one"), lines(tmp_path / "two")
    assert [r["step"] for r in lb] == list(range(1, 21))  # one line per step: rank 0 writes
    for ra, rb in zip(la, lb):  # the logged loss is the mean over the global batch, as in one process
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_tilt_under_torchrun_keeps_a_buffer_per_rank_stops_on_sigterm_and_resumes(tmp_path, base_run):
    opts = {**TINY_TILT, "persistent": True, "checkpoint_every": 4,
            "train_sampler": {"kind": "langevin", "steps": 3, "step_size": 0.01}}
    run = tmp_path / "tilt"
    proc = tiltkit_process("train", "tilt", "--base", str(base_run), "--out", str(run), "--steps", "10000",
                           "--device", "cpu", *sets(opts), nproc=2)
    wait_for_step(proc, run, 6)
    proc.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to both processes
    proc.communicate(timeout=60)
    last = lines(run)[-1]
    assert last["event"] == "interrupted" and last["signal"] == "SIGTERM"
    assert latest_checkpoint(run).name == f"step_{last['step']:07d}"  # every rank stopped after that step
    state = torch.load(latest_checkpoint(run) / "state.pt", weights_only=True)
    b0, b1 = (r["buffer"]["store_0"] for r in state["ranks"])
    assert b0.shape == b1.shape == (opts["buffer_size"], 2) and not torch.equal(b0, b1)  # own chains per rank
    assert state["ranks"][0]["weights_sum"] == state["ranks"][1]["weights_sum"]  # one energy on both ranks
    end = str(last["step"] + 4)
    refused = tiltkit("train", "tilt", "--out", str(run), "--resume", "--steps", end)
    assert refused.returncode == 2 and "written by 2 processes" in refused.stderr
    resumed = tiltkit("train", "tilt", "--out", str(run), "--resume", "--steps", end, nproc=2)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in lines(run) if "event" not in r] == list(range(1, int(end) + 1))


@pytest.mark.slow
def test_denoising_ebm_trains_under_torchrun(tmp_path):
    (x, y), (xt, yt) = squares(64, np.random.default_rng(0)), squares(16, np.random.default_rng(1))
    np.savez(tmp_path / "squares.npz", x=x, y=y, x_test=xt, y_test=yt)
    done = tiltkit("train", "debm", "--data", str(tmp_path / "squares.npz"), "--out", str(tmp_path / "debm"),
                   "--device", "cpu", *sets({**DEBM, "batch_size": 4}), nproc=2)
    assert done.returncode == 0, done.stderr
    logged = lines(tmp_path / "debm")
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    ranks = torch.load(latest_checkpoint(tmp_path / "debm") / "state.pt", weights_only=True)["ranks"]
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]  # both updates (γ, φ split) averaged over ranks
    assert not torch.equal(ranks[0]["rng"], ranks[1]["rng"])  # while each rank drew its own chains
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in logged)


def test_ranks_whose_weights_differ_are_caught_at_the_checkpoint(tmp_path):
    class Diverged(Distributed):  # one process, but its "other rank" reports other weights
        def gather(self, obj):
            return [obj, {**obj, "weights_sum": obj["weights_sum"] + 1e-3}]

    with pytest.raises(RuntimeError, match="ranks' weights differ"):
        train_base(tiny_base_cfg(steps=2), tmp_path / "run", quiet=True, dist=Diverged())
