"""Pictures: 2-D point clouds and energy landscapes (the demo figure)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def plot_points(ax, x: np.ndarray, title: str, lim: tuple[float, float]) -> None:
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, linewidths=0)
    ax.set(xlim=lim, ylim=lim, title=title, aspect="equal", xticks=[], yticks=[])


@torch.no_grad()
def plot_energy(ax, energy: nn.Module, lim: tuple[float, float], title: str, resolution: int = 200) -> None:
    """E(x) over a grid of the plane, as an image (dark = low energy = likely)."""
    ticks = torch.linspace(lim[0], lim[1], resolution)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    grid = torch.stack([xx.flatten(), yy.flatten()], 1)
    device = next(energy.parameters()).device
    e = energy(grid.to(device)).cpu().view(resolution, resolution).numpy()
    ax.imshow(e, origin="lower", extent=(*lim, *lim), cmap="magma_r")
    ax.set(title=title, xticks=[], yticks=[])


def demo_figure(rows: list[dict], path: Path) -> None:
    """One row per data set: data | base samples | tilted samples | learned energy.

    rows: dicts with keys name, data, base, tilted (arrays (N, 2)) and energy (a module).
    """
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.4 * len(rows)), squeeze=False)
    for ax, row in zip(axes, rows):
        pts = np.concatenate([row["data"], row["base"], row["tilted"]])
        lo, hi = np.percentile(pts, [0.5, 99.5], axis=0)
        pad = 0.1 * float((hi - lo).max())
        lim = (float(lo.min()) - pad, float(hi.max()) + pad)
        plot_points(ax[0], row["data"], f"{row['name']}: data", lim)
        plot_points(ax[1], row["base"], "VAE samples", lim)
        plot_points(ax[2], row["tilted"], "tilted samples (latent EBM)", lim)
        plot_energy(ax[3], row["energy"], lim, "learned energy E(x)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
