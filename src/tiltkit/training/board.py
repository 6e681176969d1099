"""The optional TensorBoard log of a run (`--log tensorboard`, the `[tensorboard]` extra): every step's
metrics as scalars `train/<name>`, and for image runs a grid of samples (`samples`) every
`log_images_every` steps, in RUN/tensorboard. metrics.jsonl stays the run's record; this is a view of it.

A resumed or rolled-back run goes on from step s: the event files' lines past s − 1 are purged
(SummaryWriter's purge_step), as MetricsLog.trim drops them from metrics.jsonl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..choices import LogBackend
from ..data.images import to_uint8
from ..errors import UserError

PREVIEW_N = 64  # images in a sample grid


class Board:
    """A SummaryWriter on RUN/tensorboard whose events from step `first` on are purged (they are run again)."""

    def __init__(self, run_dir: Path, first: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--log tensorboard needs the tensorboard package: pip install 'tiltkit[tensorboard]'") \
                from None
        self.path = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(str(self.path), purge_step=first)

    def scalars(self, step: int, metrics: dict) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{name}", value, step)

    def images(self, step: int, images: Tensor) -> None:
        """images: (N, C, H, W) uint8, drawn as one grid."""
        self.writer.add_images("samples", images, step, dataformats="NCHW")

    def rewind(self, first: int) -> None:
        """Go on from step `first` (a rollback): later events are purged."""
        self.writer.close()
        self.writer = type(self.writer)(str(self.path), purge_step=first)

    def close(self) -> None:
        self.writer.close()


def open_board(cfg, run_dir: Path, first: int, enabled: bool) -> Board | None:
    """The run's Board where its config asks for one (`cfg.log`) and this process writes (`enabled`), else None."""
    return Board(run_dir, first) if enabled and LogBackend(cfg.log) is LogBackend.TENSORBOARD else None


def image_preview(method, cfg, model: nn.Module, n: int = PREVIEW_N) -> Callable[[], Tensor] | None:
    """For an image run, a function drawing n samples of `model` as uint8 images (n, C, H, W) on the CPU, the
    way `tiltkit sample` does (`method.draw`), from the same noise each call (a generator seeded `cfg.seed`:
    the training's own random streams are untouched). None for a point run."""
    pixel_range = method.base(model).pixel_range
    if pixel_range is None:
        return None

    def draw() -> Tensor:
        device = next(model.parameters()).device
        gen = torch.Generator(device).manual_seed(cfg.seed)
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            x = method.draw(cfg, model, model.sample_noise(n, gen), gen)
        finally:
            for m, training in modes.items():
                m.train(training)
        return to_uint8(x, pixel_range).cpu()
    return draw
