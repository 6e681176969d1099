"""Pictures: 2-D point clouds, chain paths and energy landscapes (the demo figure); image grids and Langevin
strips; a run's training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, loaded by the first figure (not by every command)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_points(ax, x: np.ndarray, title: str, lim: tuple[float, float]) -> None:
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, linewidths=0)
    ax.set(xlim=lim, ylim=lim, title=title, aspect="equal", xticks=[], yticks=[])


@torch.no_grad()
def plot_energy(ax, energy: nn.Module, lim: tuple[float, float], title: str, resolution: int = 200) -> None:
    """E(x) over a grid of the plane, as an image with its colorbar: the reversed magma map draws low energy
    (likely points) dark and high energy light."""
    ticks = torch.linspace(lim[0], lim[1], resolution)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    grid = torch.stack([xx.flatten(), yy.flatten()], 1)
    device = next(energy.parameters()).device
    e = energy(grid.to(device)).cpu().view(resolution, resolution).numpy()
    image = ax.imshow(e, origin="lower", extent=(*lim, *lim), cmap="magma_r")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="E(x)   (dark = low = likely)")
    ax.set(title=title, xticks=[], yticks=[])


def points_figure(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Scatter plots of 2-D samples side by side, on one shared square box: [(title, points (N, 2)), …]."""
    pts = np.concatenate([x for _, x in panels])
    lo, hi = np.percentile(pts, [0.5, 99.5], axis=0)
    pad = 0.1 * float((hi - lo).max())
    lim = (float(lo.min()) - pad, float(hi.max()) + pad)
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        plot_points(ax, x, title, lim)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def chain_paths(frames: list[np.ndarray], path: Path, title: str = "Langevin chains") -> None:
    """2-D chains drawn as paths: frames[t] (N, 2) is every chain's state at frame t; start ○, end ●."""
    states = np.stack(frames, 1)  # (N, T, 2)
    fig, ax = pyplot().subplots(figsize=(5, 5))
    for chain in states:
        ax.plot(chain[:, 0], chain[:, 1], lw=0.6, alpha=0.7)
    ax.scatter(states[:, 0, 0], states[:, 0, 1], s=12, facecolors="none", edgecolors="gray", label="start")
    ax.scatter(states[:, -1, 0], states[:, -1, 1], s=12, color="black", label="end")
    ax.set(title=f"{title}: {states.shape[0]} chains, {states.shape[1]} frames", aspect="equal")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


CURVES = (("loss", ("loss",)), ("energies", ("e_pos", "e_neg")), ("energy gap E(x⁻) − E(x⁺)", ("gap",)),
          ("acceptance rate", ("accept",)), ("validation domain FID", ("val_fid",)))


def curves_figure(records: list[dict], path: Path, title: str = "") -> list[str]:
    """One panel per logged figure against step (loss, E⁺/E⁻, gap, acceptance, validation FID), from the step
    lines of a run's metrics.jsonl; returns the panels drawn (a figure no line holds is left out)."""
    panels = [(name, keys) for name, keys in CURVES if any(k in r for r in records for k in keys)]
    if not panels:
        panels = [("loss", ("loss",))]
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        for key in keys:
            steps = [r["step"] for r in records if isinstance(r.get(key), (int, float))]
            values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
            ax.plot(steps, values, marker="o" if key == "val_fid" else None, ms=3, lw=1, label=key)
        ax.set(title=name, xlabel="step")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return [name for name, _ in panels]


BASE_NAMES = {"vae": "VAE", "realnvp": "RealNVP", "glf-mlp": "GLF"}


def demo_figure(rows: list[dict], path: Path) -> None:
    """One row per data set: data | base samples | tilted samples | learned energy.

    rows: dicts with keys name, data, base, tilted (arrays (N, 2)), base_name ("vae", "realnvp", "glf-mlp") and energy (a module).
    """
    fig, axes = pyplot().subplots(len(rows), 4, figsize=(13, 3.4 * len(rows)), squeeze=False)
    for ax, row in zip(axes, rows):
        pts = np.concatenate([row["data"], row["base"], row["tilted"]])
        lo, hi = np.percentile(pts, [0.5, 99.5], axis=0)
        pad = 0.1 * float((hi - lo).max())
        lim = (float(lo.min()) - pad, float(hi.max()) + pad)
        plot_points(ax[0], row["data"], f"{row['name']}: data", lim)
        plot_points(ax[1], row["base"], f"{BASE_NAMES.get(row['base_name'], row['base_name'])} samples", lim)
        plot_points(ax[2], row["tilted"], "tilted samples (latent EBM)", lim)
        plot_energy(ax[3], row["energy"], lim, "learned energy E(x)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    pyplot().close(fig)


# -- images -------------------------------------------------------------------------------

def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 images (N, C, H, W) -> one (rows·(H+pad)+pad, nrow·(W+pad)+pad, C) uint8 array, white gaps."""
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    rows = -(-n // nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(x.cpu().numpy()):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = img.transpose(1, 2, 0)
    return grid


def save_image(array: np.ndarray, path: Path, scale: int = 1) -> None:
    """Write an (H, W, C) uint8 array as a PNG, optionally enlarged `scale` times (nearest)."""
    from PIL import Image

    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def trajectory_strip(frames: list[torch.Tensor]) -> np.ndarray:
    """Langevin chains as a strip (tilting paper Fig. 5.3): one row per chain, one column per saved step.

    frames: T uint8 tensors (B, C, H, W), the chain states in order.
    """
    stacked = torch.stack(frames, 1)  # (B, T, C, H, W): row i is chain i through time
    return image_grid(stacked.flatten(0, 1), nrow=len(frames))


def compare_figure(panels: list[tuple[str, torch.Tensor]], path: Path, nrow: int | None = None) -> None:
    """Titled image grids side by side, e.g. [("VAE", base), ("VAE + latent EBM", tilted)] from the same noise."""
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        grid = image_grid(x, nrow)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


# -- OOD scores ---------------------------------------------------------------------------

def score_histograms(groups: list[tuple[str, np.ndarray]], path: Path, xlabel: str, title: str = "",
                     bins: int = 60, span: float = 6.0) -> None:
    """Overlaid histograms of one OOD score: the in-distribution set first, then each OOD set (VAEBM Fig. 4).

    groups: (label, scores (N,)) pairs, in-distribution first. The axis covers every set's 0.5th–99.5th
    percentile, but reaches at most `span` in-distribution widths (its 1st–99th percentile range) beyond
    the in-distribution range, so one extreme set cannot squash the rest; scores off the axis are drawn
    in the edge bin and counted in the legend. Densities, so sets of different sizes compare.
    """
    p_in = np.percentile(groups[0][1], [1, 99])
    width = max(float(p_in[1] - p_in[0]), 1e-6 * max(1.0, float(np.abs(p_in).max())))
    lo = max(min(float(np.percentile(v, 0.5)) for _, v in groups), p_in[0] - span * width)
    hi = min(max(float(np.percentile(v, 99.5)) for _, v in groups), p_in[1] + span * width)
    pad = 0.02 * (hi - lo) if hi > lo else 0.5 * width
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for i, (label, v) in enumerate(groups):
        off = float(np.mean((v < lo) | (v > hi)))
        note = f" ({off:.0%} off the axis)" if off >= 0.01 else ""
        kw = {"color": "black", "lw": 1.8, "histtype": "step"} if i == 0 else {"alpha": 0.35, "histtype": "stepfilled"}
        ax.hist(np.clip(v, lo, hi), bins=edges, density=True, label=f"{label} (n={len(v)}){note}", **kw)
    ax.set(xlabel=f"{xlabel}   (higher = more in-distribution)", ylabel="density", title=title, xlim=(lo, hi))
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
