"""Sample-quality metrics for toy 2-D sets.

25-Gaussians (VEEGAN, Srivastava et al. 2017; DRS, Azadi et al. 2019): a sample is
high-quality if it lies within 3σ (also reported: 4σ) of its nearest centre; a mode is
captured if at least one high-quality sample has it as nearest centre.
Every set: MMD² (unbiased estimator, Gretton et al. 2012) with a mixture of RBF kernels,
bandwidths h = m·{1/16, 1/8, 1/4, 1/2, 1} where m is the median pairwise distance of the
held-out points; the median alone (≈ the data's extent) is blind to structure such as the
Swiss roll's arms or the 25 modes' width. EMD is the mean distance of the
optimal one-to-one assignment between equally many samples and held-out points (≤ 2,000).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from ..data.toy import GAUSS25_SIGMA, gauss25_centres

MAX_POINTS = 2000


def mode_metrics(samples: np.ndarray, centres: np.ndarray, sigma: float) -> dict[str, float]:
    """modes captured (count), and fractions of samples within 3σ (`hq`) and 4σ (`hq4`) of the nearest centre."""
    dist = cdist(samples, centres)
    nearest, d_min = dist.argmin(1), dist.min(1)
    hq = d_min <= 3 * sigma
    return {"modes": int(len(np.unique(nearest[hq]))), "hq": float(hq.mean()), "hq4": float((d_min <= 4 * sigma).mean())}


BANDWIDTH_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def mmd2(x: np.ndarray, y: np.ndarray, bandwidths: tuple[float, ...] | None = None) -> float:
    """Unbiased MMD² between samples x (n, D) and reference y (m, D).

    Kernel k(a, b) = mean over h of exp(−‖a − b‖²/(2h²)); default bandwidths are
    BANDWIDTH_FRACTIONS times the median pairwise distance of y.
    """
    if bandwidths is None:
        median = float(np.median(cdist(y, y)[np.triu_indices(len(y), 1)]))
        bandwidths = tuple(f * median for f in BANDWIDTH_FRACTIONS)

    def k(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2 * h**2)) for h in bandwidths) / len(bandwidths)
    n, m = len(x), len(y)
    k_xx, k_yy = k(x, x), k(y, y)
    return float((k_xx.sum() - np.trace(k_xx)) / (n * (n - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                 - 2 * k(x, y).mean())


def emd(x: np.ndarray, y: np.ndarray) -> float:
    """Earth mover's distance between equal-size point sets: mean cost of the optimal assignment."""
    n = min(len(x), len(y))
    cost = cdist(x[:n], y[:n])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def toy_metrics(samples: np.ndarray, held_out: np.ndarray, dataset: str) -> dict[str, float]:
    """All toy metrics of `samples` against `held_out` points; mode metrics only for 25-Gaussians."""
    rng = np.random.default_rng(0)
    x = samples[rng.permutation(len(samples))[:MAX_POINTS]].astype(np.float64)
    y = held_out[rng.permutation(len(held_out))[:MAX_POINTS]].astype(np.float64)
    out: dict[str, float] = {}
    if dataset == "25gaussians":
        out.update(mode_metrics(samples, gauss25_centres(), GAUSS25_SIGMA))
    out["mmd"] = mmd2(x, y)
    out["emd"] = emd(x, y)
    return out
