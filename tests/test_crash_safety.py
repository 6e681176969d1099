"""Crash safety: SIGKILL at random steps then --resume equals an uninterrupted run; SIGTERM saves a final
checkpoint; checkpoints carry a format and checksums; a crafted pickle is never executed."""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch

from conftest import TINY_TILT, sets, tiltkit, tiltkit_process, wait_for_step
from test_distributed import lines
from test_training import weights
from tiltkit.errors import UserError
from tiltkit.training.checkpoint import RUN_FORMAT, _sha256, latest_checkpoint, list_checkpoints, load_checkpoint
from tiltkit import load

STEPS = 40
OPTS = {**TINY_TILT, "persistent": True, "checkpoint_every": 4,  # a replay buffer: more state to get right
        "train_sampler": {"kind": "mala", "steps": 25, "step_size": 0.01}}  # steps of a few tens of ms


def start(run, base, resume: bool = False) -> subprocess.Popen:
    args = ["--out", str(run), "--resume"] if resume else \
        ["--base", str(base), "--out", str(run), "--steps", str(STEPS), "--device", "cpu", *sets(OPTS)]
    return tiltkit_process("train", "tilt", *args)


@pytest.fixture(scope="module")
def uninterrupted(base_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("crash") / "full"
    proc = start(run, base_run)
    assert proc.wait(timeout=300) == 0, proc.communicate()[1]
    return run


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_equals_an_uninterrupted_run(tmp_path, base_run, uninterrupted):
    run, rng = tmp_path / "killed", random.Random(0)
    proc = start(run, base_run)
    for target in sorted(rng.sample(range(2, STEPS - 2), 3)):  # three kills, anywhere in a step or a save
        wait_for_step(proc, run, target)
        time.sleep(rng.uniform(0, 0.05))
        proc.kill()
        proc.wait()
        assert list_checkpoints(run), "no checkpoint to resume from"
        proc = start(run, base_run, resume=True)
    assert proc.wait(timeout=300) == 0, proc.communicate()[1]
    wa, wb = weights(uninterrupted), weights(run)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    buffers = [torch.load(latest_checkpoint(r) / "state.pt", weights_only=True)["ranks"][0]["buffer"]["store_0"]
               for r in (uninterrupted, run)]
    torch.testing.assert_close(*buffers, rtol=0, atol=0)
    assert [r["step"] for r in lines(run)] == list(range(1, STEPS + 1))  # each step logged once


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_of_the_step_it_ends(tmp_path, base_run, uninterrupted):
    run = tmp_path / "stopped"
    proc = start(run, base_run)
    wait_for_step(proc, run, 6)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert "interrupted: checkpoint of step" in proc.communicate()[1]
    last = lines(run)[-1]
    assert last["event"] == "interrupted" and last["signal"] == "SIGTERM"
    assert latest_checkpoint(run).name == f"step_{last['step']:07d}"  # saved at the step it stopped after
    assert tiltkit("train", "tilt", "--out", str(run), "--resume").returncode == 0
    wa, wb = weights(uninterrupted), weights(run)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_a_changed_byte_is_caught_by_the_checksum(tmp_path, uninterrupted):
    run = copy_run(uninterrupted, tmp_path / "run")
    state = latest_checkpoint(run) / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    with pytest.raises(UserError, match="state.pt does not match its SHA-256"):
        load(run)


def test_a_newer_format_is_refused(tmp_path, uninterrupted):
    run = copy_run(uninterrupted, tmp_path / "run")
    manifest = latest_checkpoint(run) / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 99}))
    with pytest.raises(UserError, match="format 99, written by a newer tiltkit"):
        load(run)


class Exploit:
    """Unpickling this would create the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("with_manifest", [True, False])
def test_a_crafted_pickle_is_refused_and_never_run(tmp_path, uninterrupted, with_manifest):
    run = copy_run(uninterrupted, tmp_path / "run")
    ckpt, marker = latest_checkpoint(run), tmp_path / "pwned"
    buf = io.BytesIO()
    pickle.dump({"step": 1, "payload": Exploit(marker)}, buf, protocol=2)
    (ckpt / "state.pt").write_bytes(buf.getvalue())
    manifest = ckpt / "manifest.json"
    if with_manifest:  # checksums that match: only the weights-only load stands in the way
        record = json.loads(manifest.read_text())
        record["sha256"]["state.pt"] = _sha256(ckpt / "state.pt")
        manifest.write_text(json.dumps(record))
    else:  # a format-1 checkpoint of a run from before manifests: no checksums at all
        manifest.unlink()
        (ckpt.parent / RUN_FORMAT).unlink()
    with pytest.raises(UserError, match="never unpickles"):
        load_checkpoint(ckpt, {})
    with pytest.raises(UserError, match="never unpickles"):
        load(run)
    assert not marker.exists()
