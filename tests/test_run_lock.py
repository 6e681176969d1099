"""One writer per run directory: a second training of a run in training is refused naming the holder, a lock
left by a killed process is taken over, the lock goes when training ends; readers of a run in training never
tear; an --out that cannot be created is one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import TINY_BASE, sets, tiltkit_process, tiny_base_cfg, wait_for_step
from tiltkit import load
from tiltkit.cli import main
from tiltkit.errors import DivergenceError, Interrupted, UserError
from tiltkit.generators import MLPVAE
from tiltkit.training import method, train_base
from tiltkit.training.lock import LOCK, release
from tiltkit.training.rundir import prepare_run_dir

STEPS = 60
OPTS = {**TINY_BASE, "checkpoint_every": 1}  # a save every step: checkpoints rotate all the time


def start(run, steps: int = STEPS, checkpoint_every: int = 1) -> subprocess.Popen:
    return tiltkit_process("train", "base", "--data", "25gaussians", "--out", str(run), "--steps", str(steps),
                           "--device", "cpu", *sets({**OPTS, "checkpoint_every": checkpoint_every}))


def steps_logged(run) -> list[int]:
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "event" not in r]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lock(run, pid: int, host: str) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK).write_text(json.dumps({"pid": pid, "host": host, "started": "2024-01-01T00:00:00+00:00"}))


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_holder_and_the_first_finishes(tmp_path, capsys):
    run = tmp_path / "run"
    first = start(run)
    wait_for_step(first, run, 1)
    first.send_signal(signal.SIGSTOP)  # holds the lock, alive, for as long as the others take
    try:
        for second in (["--resume", "--out", str(run)], ["--data", "25gaussians", "--out", str(run), *sets(OPTS)]):
            assert main(["train", "base", *second, "--quiet"]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert f"is being trained by process {first.pid} on {socket.gethostname()} (since " in err, err
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.communicate()[1]
    assert steps_logged(run) == list(range(1, STEPS + 1))
    assert not (run / LOCK).exists()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_training_is_taken_over_by_resume(tmp_path, capsys):
    run = tmp_path / "run"
    killed = start(run)
    wait_for_step(killed, run, 1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.loads((run / LOCK).read_text())["pid"] == killed.pid
    assert main(["train", "base", "--resume", "--out", str(run), "--quiet"]) == 0
    assert f"held by process {killed.pid}" in capsys.readouterr().err
    assert steps_logged(run) == list(range(1, STEPS + 1))
    assert not (run / LOCK).exists()


@pytest.mark.slow
def test_loading_a_run_in_training_never_tears(tmp_path, monkeypatch):
    """Half the loads pause between picking a checkpoint and reading it, long enough for the training to
    rotate it away; each must pick the newest again and succeed."""
    run = tmp_path / "run"
    training = start(run, steps=100_000, checkpoint_every=3)  # a rotation every few ms; a load outlasts it paused
    read_shape, pause = method.data_shape_of, {"next": False, "picks": 0}

    def slow_read_shape(checkpoint):
        pause["picks"] += 1
        if pause["next"]:
            pause["next"] = False
            time.sleep(0.2)
        return read_shape(checkpoint)
    monkeypatch.setattr(method, "data_shape_of", slow_read_shape)
    try:
        wait_for_step(training, run, 2)
        loads, deadline = 0, time.monotonic() + 2
        while time.monotonic() < deadline:
            pause["next"] = loads % 2 == 0
            load(run, device="cpu")
            loads += 1
        assert training.poll() is None, training.communicate()[1]
    finally:
        training.kill()
        training.wait()
    assert loads >= 4 and pause["picks"] > loads  # some picks were rotated away and taken again


def test_an_interrupted_or_diverged_training_leaves_no_lock(tmp_path, monkeypatch):
    real_loss, calls = MLPVAE.loss, []

    def loss(self, *args):  # the third step: a SIGINT (training stops after it); the fifth: a non-finite loss
        out = real_loss(self, *args)
        calls.append((run / LOCK).is_file())
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        if len(calls) == 5:
            out.metrics["loss"] = float("inf")
        return out
    monkeypatch.setattr(MLPVAE, "loss", loss)
    run, cfg = tmp_path / "run", tiny_base_cfg(data="25gaussians", on_divergence="stop")
    with pytest.raises(Interrupted):
        train_base(cfg, run, quiet=True)
    assert not (run / LOCK).exists()
    with pytest.raises(DivergenceError):
        train_base(cfg, run, resume=True, quiet=True)
    assert not (run / LOCK).exists()
    assert calls == [True] * 5  # held while it trained


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    run = tmp_path / "run"
    write_lock(run, dead_pid(), "elsewhere.example")
    with pytest.raises(UserError, match=re.escape(f"on elsewhere.example (since 2024-01-01T00:00:00+00:00); "
                                                  f"if that process is gone, delete {run / LOCK}")):
        prepare_run_dir(run, resume=False)
    assert json.loads((run / LOCK).read_text())["host"] == "elsewhere.example"


def test_a_lock_of_a_gone_process_on_this_host_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    write_lock(run, dead_pid(), socket.gethostname())
    prepare_run_dir(run, resume=False)
    assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
    assert "taking it over" in capsys.readouterr().err
    release(run)
    assert not (run / LOCK).exists()


def test_an_error_before_training_leaves_no_lock(tmp_path, base_run):
    """A resume that fails on loading its checkpoint (another model size) lets go of the lock; a lock this
    process left otherwise is its own to take again."""
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    other = tiny_base_cfg(data="25gaussians", model_kwargs={**TINY_BASE["model_kwargs"], "hidden": 32})
    with pytest.raises(UserError, match="does not match"):
        train_base(other, run, resume=True, quiet=True)
    assert not (run / LOCK).exists()
    fresh = tmp_path / "fresh"
    prepare_run_dir(fresh, resume=False)  # as if the trainer then failed before RunState.begin
    train_base(tiny_base_cfg(data="25gaussians", steps=2), fresh, quiet=True)
    assert not (fresh / LOCK).exists()


def uncreatable_outs(tmp_path) -> dict:
    (tmp_path / "file").write_text("")
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    return {"under a file": (tmp_path / "file" / "run", f"{tmp_path / 'file'} is not a directory"),
            "under /proc": ("/proc/tiltkit-test", "no such file or directory"),
            "in a read-only folder": (read_only / "run", "permission denied")}


@pytest.mark.parametrize("case", ["under a file", "under /proc", "in a read-only folder"])
def test_an_out_that_cannot_be_created_is_one_line_and_exit_2(case, tmp_path, capsys):
    if case == "in a read-only folder" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    out, reason = uncreatable_outs(tmp_path)[case]
    assert main(["train", "base", "--data", "25gaussians", "--out", str(out), "--quiet", *sets(TINY_BASE)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot create run directory {out}: {reason}" in err, err
