"""Inputs that were trusted too far (issue: trust), each fixed and checked here: a deleted manifest no longer
turns the checksum off, a manifest of the wrong shape is refused, models and energies named without kwargs get
their own defaults, seeds and betas are range-checked, and data files that gave wrong answers with exit 0
(mixed grayscale and colour folders, complex values, IDX labels past the classes) are one UserError."""

from __future__ import annotations

import gzip
import json
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tiltkit.cli import build_parser, main
from tiltkit.commands import resolve_options
from tiltkit.config import (MAX_SEED, BaseRunConfig, DebmRunConfig, TiltRunConfig, from_dict, read_config,
                            save_yaml)
from tiltkit.data.images import load_images
from tiltkit.data.toy import load_points
from tiltkit.errors import UserError
from tiltkit.training.builders import build_base, build_energy
from tiltkit.training.checkpoint import (RUN_FORMAT, latest_checkpoint, load_checkpoint, read_state, read_weights,
                                         save_checkpoint)
from tiltkit.training.distributed import Distributed
from tiltkit.training.loop import ROLLBACK_SEED_STRIDE

# ------------------------------------------------------------------ A. checkpoints


def module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


NEW_STATE = {"optimizer": {}, "ranks": [{"rng": torch.zeros(3)}]}  # today's layout (training.loop)
OLD_STATE = {"optimizer": {}, "rng": [torch.zeros(3), torch.zeros(3)]}  # format 1: no "ranks"


def flip_a_weight(checkpoint) -> None:
    """Flip one bit in the last tensor byte: the file still parses, one weight changes."""
    path = checkpoint / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_deleted_manifest_does_not_turn_the_checksum_off(tmp_path):
    ckpt = save_checkpoint(tmp_path, 1, {"m": module()}, NEW_STATE)
    flip_a_weight(ckpt)
    (ckpt / "manifest.json").unlink()
    for load in (lambda: load_checkpoint(ckpt, {"m": module(1)}), lambda: read_weights(ckpt),
                 lambda: read_state(ckpt)):
        with pytest.raises(UserError, match="corrupted: its manifest.json is missing"):
            load()


def test_a_run_from_before_the_marker_is_told_by_its_state_layout(tmp_path):
    """A manifest-format run written before RUN/checkpoints/FORMAT existed: its state has the per-rank layout."""
    ckpt = save_checkpoint(tmp_path, 1, {"m": module()}, NEW_STATE)
    (ckpt / "manifest.json").unlink()
    (ckpt.parent / RUN_FORMAT).unlink(missing_ok=True)
    with pytest.raises(UserError, match="manifest.json is missing"):
        load_checkpoint(ckpt, {"m": module(1)})


def old_run(root, names=("step_0000001", "step_0000002")):
    """A run written before manifests (format 1): no manifest, no FORMAT marker, state without "ranks"."""
    for i, name in enumerate(names, 1):
        ckpt = save_checkpoint(root, i, {"m": module(i)}, {"step": i, **OLD_STATE}, name=name)
        (ckpt / "manifest.json").unlink()
    (root / "checkpoints" / RUN_FORMAT).unlink(missing_ok=True)
    return root / "checkpoints" / names[-1]


def test_a_format_1_run_loads_and_its_old_checkpoints_still_load_once_resumed(tmp_path):
    old = old_run(tmp_path)
    target = module(9)
    assert load_checkpoint(old, {"m": target})["step"] == 2
    torch.testing.assert_close(target.weight, module(2).weight)
    new = save_checkpoint(tmp_path, 3, {"m": module(3)}, NEW_STATE, keep=3)  # the run resumed by today's tiltkit
    marker = json.loads((tmp_path / "checkpoints" / RUN_FORMAT).read_text())
    assert marker["without_manifest"] == ["step_0000001", "step_0000002"]
    load_checkpoint(old, {"m": module()})  # still format 1
    (new / "manifest.json").unlink()
    with pytest.raises(UserError, match="manifest.json is missing"):
        load_checkpoint(new, {"m": module()})


def test_a_format_1_checkpoint_rewritten_under_its_name_needs_its_manifest(tmp_path):
    """An old run's `best`, written again by today's tiltkit, leaves the marker's list of format-1 checkpoints."""
    old_run(tmp_path, ("step_0000001", "best"))
    save_checkpoint(tmp_path, 3, {"m": module()}, NEW_STATE)
    marker = tmp_path / "checkpoints" / RUN_FORMAT
    assert json.loads(marker.read_text())["without_manifest"] == ["best", "step_0000001"]
    best = save_checkpoint(tmp_path, 3, {"m": module()}, NEW_STATE, name="best")
    assert json.loads(marker.read_text())["without_manifest"] == ["step_0000001"]
    (best / "manifest.json").unlink()
    with pytest.raises(UserError, match="manifest.json is missing"):
        read_state(best)


@pytest.mark.parametrize("manifest", [
    {"format": 2, "sha256": []}, {"format": "x", "sha256": {}}, {"format": 2, "sha256": {"state.pt": 5}},
    [1, 2], "text", None, 7, {"format": True, "sha256": {}}, {"format": 2}, {"sha256": {}}, {"format": 1, "sha256": {}},
    {"format": 2.5, "sha256": {}}])
def test_a_manifest_of_the_wrong_shape_is_unreadable_not_a_traceback(tmp_path, manifest):
    ckpt = save_checkpoint(tmp_path, 1, {"m": module()}, NEW_STATE)
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="corrupted: its manifest.json is unreadable"):
        load_checkpoint(ckpt, {"m": module()})


def test_the_cli_refuses_a_checkpoint_without_its_manifest_in_one_line(tmp_path, base_run, capsys):
    run = shutil.copytree(base_run, tmp_path / "run")
    ckpt = latest_checkpoint(run)
    flip_a_weight(ckpt)
    (ckpt / "manifest.json").unlink()
    assert main(["sample", str(run), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    assert "manifest.json is missing" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ B. each model and energy its own defaults


def options(*argv: str, cls=BaseRunConfig):
    return resolve_options(build_parser().parse_args(argv), cls)


def test_a_named_model_or_energy_gets_its_own_defaults():
    cfg = options("train", "base", "--data", "x.npy", "--model", "conv-vae", "--out", "o")
    assert cfg.model_kwargs == {}
    assert build_base(cfg, (1, 28, 28)).latent_dim == 100  # ConvVAE's own default; was: no argument 'hidden'
    tilt = options("train", "tilt", "--base", "b", "--out", "o", "--set", "energy=conv-small", cls=TiltRunConfig)
    assert tilt.energy_kwargs == {}
    build_energy(tilt, (1, 28, 28))


def test_the_default_model_and_energy_keep_the_toy_recipe_s_sizes():
    toy = {"latent_dim": 2, "hidden": 128, "depth": 3}
    for cfg in (BaseRunConfig(), BaseRunConfig(data="25gaussians"), options("train", "base", "--out", "o"),
                from_dict(BaseRunConfig, {"model": "vae"})):
        assert cfg.model_kwargs == toy
    assert TiltRunConfig().energy_kwargs == {"hidden": 128, "depth": 3, "fourier_features": 64, "fourier_scale": 1.0}
    a, b = build_base(BaseRunConfig(), (2,)), build_base(from_dict(BaseRunConfig, {"model_kwargs": toy}), (2,))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert BaseRunConfig().model_kwargs is not BaseRunConfig().model_kwargs  # never one shared dict


def test_kwargs_are_saved_resolved_and_explicit_ones_load_as_written(tmp_path):
    for cfg in (from_dict(BaseRunConfig, {"model": "conv-vae"}), BaseRunConfig(),
                from_dict(BaseRunConfig, {"model_kwargs": {"latent_dim": 4}})):
        save_yaml(cfg, tmp_path / "config.yaml", "base")
        assert "model_kwargs: null" not in (tmp_path / "config.yaml").read_text()
        assert read_config(tmp_path / "config.yaml", BaseRunConfig, "base") == cfg
    tilt = from_dict(TiltRunConfig, {"base": "b", "energy": "conv-small"})
    save_yaml(tilt, tmp_path / "config.yaml", "tilt")
    assert read_config(tmp_path / "config.yaml", TiltRunConfig, "tilt").energy_kwargs == {}


# ------------------------------------------------------------------ C. seeds and betas


@pytest.mark.parametrize("seed", [2**70, 2**64, 2**63, -1, -(2**70)])
def test_a_seed_past_64_bits_or_negative_is_refused(seed):
    for cls, values in ((BaseRunConfig, {}), (TiltRunConfig, {"base": "b"}), (DebmRunConfig, {})):
        with pytest.raises(UserError, match=r"\.seed must be in \[0, 2\*\*63 - 1\]"):
            from_dict(cls, {**values, "seed": seed})


def test_the_largest_seed_seeds_every_derived_stream():
    assert from_dict(BaseRunConfig, {"seed": MAX_SEED}).seed == MAX_SEED
    Distributed().generators(MAX_SEED + 10 * ROLLBACK_SEED_STRIDE, torch.device("cpu"))
    torch.manual_seed(MAX_SEED)


def test_the_cli_refuses_a_huge_seed_in_one_line(tmp_path, capsys):
    assert main(["train", "base", "--data", "25gaussians", "--steps", "1", "--seed", str(2**70),
                 "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "seed" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("betas", [[2, 3], [0.9, 1.0], [-0.1, 0.999], [0.5, float("nan")]])
def test_betas_outside_0_1_are_refused(betas):
    for cls, values in ((TiltRunConfig, {"base": "b"}), (DebmRunConfig, {})):
        with pytest.raises(UserError, match=r"\.betas must both be in \[0, 1\)"):
            from_dict(cls, {**values, "betas": betas})
    assert from_dict(TiltRunConfig, {"base": "b", "betas": [0.0, 0.999]}).betas == (0.0, 0.999)


# ------------------------------------------------------------------ D. data that gave wrong answers


def png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_a_folder_mixing_grayscale_and_colour_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(3):
        png(tmp_path / "imgs" / f"{i}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    png(tmp_path / "imgs" / "odd.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    with pytest.raises(UserError, match=r"mixes grayscale and colour.*odd\.png is RGB, .*0\.png is L"):
        load_images(str(tmp_path / "imgs"))
    assert main(["train", "base", "--data", str(tmp_path / "imgs"), "--model", "conv-vae",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "odd.png is RGB" in capsys.readouterr().err
    (tmp_path / "imgs" / "odd.png").unlink()
    assert load_images(str(tmp_path / "imgs")).x.shape == (3, 1, 6, 6)
    png(tmp_path / "rgba" / "a.png", rng.integers(0, 256, (6, 6, 4), dtype=np.uint8))  # colour modes mix fine
    png(tmp_path / "rgba" / "b.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    assert load_images(str(tmp_path / "rgba")).x.shape == (2, 3, 6, 6)


def test_complex_points_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(20, 2)) + 1j * rng.normal(size=(20, 2))
    np.save(tmp_path / "p.npy", points)
    with pytest.raises(UserError, match="complex values"):
        load_points(tmp_path / "p.npy")
    (tmp_path / "p.csv").write_text("1+2j,3\n4,5\n6,7\n")  # was: line 1 skipped as a header
    with pytest.raises(UserError, match="complex values on line 1"):
        load_points(tmp_path / "p.csv")
    (tmp_path / "h.csv").write_text("j,k\n4,5\n6,7\n")  # a header that only looks like a number
    assert load_points(tmp_path / "h.csv").shape == (2, 2)


def test_complex_images_are_refused(tmp_path):
    x = np.random.default_rng(0).random((4, 6, 6)) + 0j
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    for name in ("x.npy", "x.npz"):
        with pytest.raises(UserError, match="complex values"):
            load_images(str(tmp_path / name))


def idx_dir(root, labels):
    root.mkdir(parents=True)
    x = np.zeros((len(labels), 28, 28), np.uint8)
    y = np.array(labels, np.uint8)
    for name, arr, magic in (("train-images-idx3-ubyte", x, 0x803), ("train-labels-idx1-ubyte", y, 0x801)):
        with gzip.open(root / f"{name}.gz", "wb") as f:
            f.write(struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.tobytes())


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_labels_past_the_ten_classes_are_refused(tmp_path, name):
    idx_dir(tmp_path / name, [0, 9, 200, 3])
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz: label 200 \(item 2\) is outside 0\.\.9"):
        load_images(name, "train", data_dir=tmp_path)
    idx_dir(tmp_path / "ok" / name, [0, 9, 5, 3])
    assert load_images(name, "train", data_dir=tmp_path / "ok").y.tolist() == [0, 9, 5, 3]
