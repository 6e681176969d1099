"""Toy 2-D data sets, and any user file of points (.npy or .csv of shape (N, D)).

25-Gaussians and Swiss roll follow Discriminator Optimal Transport (Tanaka 2019), which
the tilting paper follows:
  25-Gaussians: centres (2i, 2j), i, j ∈ {−2..2}, σ = 0.05, everything divided by 2.828;
  Swiss roll:   sklearn make_swiss_roll(noise=0.25), columns 0 and 2, divided by 7.5.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import UserError
from .formats import ARRAY_FILE_ERRORS, check_npy_size, refuse_complex, why

GAUSS25_SCALE = 2.828
GAUSS25_SIGMA = 0.05 / GAUSS25_SCALE  # per-coordinate σ after scaling


def gauss25_centres() -> np.ndarray:
    """(25, 2) centres (2i, 2j)/2.828, i, j ∈ {−2..2}."""
    grid = np.array([(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)])
    return grid / GAUSS25_SCALE


def gaussians25(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = gauss25_centres()
    return centres[rng.integers(len(centres), size=n)] + GAUSS25_SIGMA * rng.standard_normal((n, 2))


def swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_swiss_roll  # scikit-learn takes a second to load: only for these two sets
    x, _ = make_swiss_roll(n, noise=0.25, random_state=int(rng.integers(2**31)))
    return x[:, [0, 2]] / 7.5


def gaussians8(n: int, rng: np.random.Generator) -> np.ndarray:
    """8 Gaussians of σ = 0.05 on the unit circle."""
    angles = 2 * np.pi * rng.integers(8, size=n) / 8
    return np.stack([np.cos(angles), np.sin(angles)], 1) + 0.05 * rng.standard_normal((n, 2))


def rings(n: int, rng: np.random.Generator) -> np.ndarray:
    """4 concentric circles of radii 0.25..1 (mass ∝ radius), radial σ = 0.02."""
    radii = np.array([0.25, 0.5, 0.75, 1.0])
    r = radii[rng.choice(4, size=n, p=radii / radii.sum())] + 0.02 * rng.standard_normal(n)
    angles = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(angles), r * np.sin(angles)], 1)


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_moons
    x, _ = make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))
    return x - np.array([0.5, 0.25])


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the 8 dark squares of a 4×4 board over [−1, 1]²."""
    x = rng.uniform(-1, 1, n)
    y = rng.uniform(0, 0.5, n) + 0.5 * rng.integers(2, size=n) * 2 - 1
    y = y + 0.5 * (np.floor(2 * x + 2) % 2)
    return np.stack([x, y], 1)


TOY_SETS = {"25gaussians": gaussians25, "swissroll": swissroll, "8gaussians": gaussians8,
            "rings": rings, "moons": moons, "checkerboard": checkerboard}


def load_points(path: str | Path) -> np.ndarray:
    """A user file of points: .npy or .csv (comma-separated, optional header), shape (N, D)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    try:
        if path.suffix == ".npy":
            check_npy_size(path)
            data = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # an empty file: the shape check below refuses it
                data = np.genfromtxt(path, delimiter=",", dtype=np.float64, skip_header=_csv_header_lines(path))
        else:
            raise UserError(f"data file {path}: expected a .npy or .csv file of shape (N, D)")
    except ARRAY_FILE_ERRORS as exc:
        raise UserError(f"data file {path} could not be read: {why(exc)}") from None
    if data.ndim == 1 and path.suffix == ".csv":
        data = data[:, None]
    if data.ndim != 2:
        raise UserError(f"data file {path} has shape {data.shape}: expected rank 2, (N, D)")
    if data.shape[0] < 2 or data.shape[1] < 1:
        raise UserError(f"data file {path} has shape {data.shape}: expected at least 2 rows and 1 column")
    refuse_complex(data, f"data file {path}")
    if np.issubdtype(data.dtype, np.number):
        with np.errstate(over="ignore", invalid="ignore"):
            points = data.astype(np.float32)
        if np.isfinite(points).all():
            return points
    raise UserError(f"data file {path} contains NaN, infinite (in float32) or non-numeric values")


def _csv_header_lines(path: Path) -> int:
    """1 when the first line of a .csv is a header (not all numbers), else 0; a line of numbers some of which are
    complex is data that cannot be read as real, not a header to skip."""
    with open(path) as f:
        fields = [v.strip() for v in f.readline().split(",")]
    if all(_is_number(v, float) for v in fields):
        return 0
    if all(_is_number(v, complex) for v in fields):
        raise UserError(f"data file {path} holds complex values on line 1: expected real numbers")
    return 1


def _is_number(field: str, kind: type) -> bool:
    """Whether `field` reads as a number of `kind` (float or complex); a bare "j" is a column name, not 1j."""
    try:
        kind(field)
    except ValueError:
        return False
    return kind is float or any(c.isdigit() for c in field)


def toy_split(name_or_file: str, n_train: int = 50_000, n_test: int = 5_000) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out test) float32 arrays for a toy set name or a user file.

    Named sets draw train and test from independent fixed seeds, so every run and every
    evaluation sees the same points; a user file is split 90/10 by a fixed permutation.
    """
    if name_or_file in TOY_SETS:
        make = TOY_SETS[name_or_file]
        train = make(n_train, np.random.default_rng(1234))
        test = make(n_test, np.random.default_rng(5678))
        return train.astype(np.float32), test.astype(np.float32)
    if not (name_or_file.endswith(".npy") or name_or_file.endswith(".csv") or Path(name_or_file).exists()):
        raise UserError(f"unknown data set {name_or_file!r}: expected one of {', '.join(TOY_SETS)}, "
                        "or a .npy/.csv file of shape (N, D)")
    data = load_points(name_or_file)
    perm = np.random.default_rng(0).permutation(len(data))
    n_held = max(1, len(data) // 10)
    return data[perm[n_held:]], data[perm[:n_held]]
