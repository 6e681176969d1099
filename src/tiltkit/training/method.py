"""Method: one kind of run (a base, a tilt, a Denoising-EBM, a tilt of the user's own generator) and all
that is particular to it, in one object. The registry (methods.py) maps each run's `kind` to its Method;
the command line, loading, sampling, image evaluation and OOD scoring ask the Method instead of comparing
kinds. A new method subclasses this beside its trainer and adds one line to the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..generators import BaseModel
from ..metrics.ood import Score, Scorer
from ..samplers.noise import Noise
from .checkpoint import load_checkpoint
from .distributed import Distributed
from .rundir import data_shape_of, read_run_checkpoint


class Method:
    kind: ClassVar[str]  # a run's `kind:` in config.yaml
    command: ClassVar[str]  # the `tiltkit train` subcommand that makes it
    config_class: ClassVar[type]
    label: ClassVar[str]  # what its samples are called in messages
    selected_by: ClassVar[str | None] = None  # a `train COMMAND` option that picks this method over the plain one
    inputs: ClassVar[tuple[str, ...]] = ()  # objects `train` and `load` take besides the config (the user's models)

    def check_command_line(self, cfg, given_data: bool) -> None:
        """Refuse a new run the command line under-specifies (`given_data`: --data or --config was given)."""

    # ---------------------------------------------------------------- training and loading

    def train(self, cfg, out: Path, resume: bool = False, quiet: bool = False, dist: Distributed = Distributed(),
              **inputs) -> nn.Module:
        """Train a run of `cfg` into `out` (as rank `dist.rank` of a torchrun job); the model, in eval mode.
        `inputs`: what a method takes besides its config (the user's base, data and energy)."""
        raise NotImplementedError

    def build(self, run_dir: Path, cfg, data_shape: tuple[int, ...], **inputs) -> nn.Module:
        """The untrained model of a run, on the CPU, ready for its checkpoint."""
        raise NotImplementedError

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """The modules a checkpoint holds, by name."""
        raise NotImplementedError

    def load(self, run_dir: Path, cfg, device: torch.device, **inputs) -> nn.Module:
        """The model of a run at its best or latest checkpoint, on `device`, in eval mode; a checkpoint that
        a training of the run rotates away while it is read is picked again (rundir.read_run_checkpoint)."""
        def read(ckpt: Path) -> nn.Module:
            model = self.build(run_dir, cfg, data_shape_of(ckpt), **inputs)
            return self.load_weights(ckpt, self.modules(model), model, device)
        return read_run_checkpoint(run_dir, read)

    @staticmethod
    def load_weights(checkpoint: Path, modules: dict[str, nn.Module], model: nn.Module,
                     device: torch.device) -> nn.Module:
        """`model` with `modules` (parts of it) loaded from `checkpoint`, on `device`, in eval mode."""
        load_checkpoint(checkpoint, modules, map_location=device)
        return model.to(device).eval()

    def data_config(self, run_dir: Path, cfg):
        """The config that names the run's data (`data`, `data_dir`, `image_size`)."""
        return cfg

    # ---------------------------------------------------------------- sampling

    def base(self, model: nn.Module) -> BaseModel:
        """The base generator of a loaded model: its data shape, pixel range and capabilities."""
        return model

    def draw(self, cfg, model: nn.Module, noise: Noise, generator: torch.Generator) -> Tensor:
        """Samples (B, *data_shape) from the starting noise of B chains (the base's own: x = T(ε))."""
        return model.decode(noise)

    def with_sampling(self, cfg, model: nn.Module, steps: int | None = None, step_size: float | None = None,
                      data_space: bool = False) -> tuple[object, nn.Module]:
        """(cfg, model) sampling with other steps or step size, or with chains in data space; only a tilt has them."""
        if steps is not None or step_size is not None or data_space:
            raise UserError(f"--space, --steps and --step-size set a tilted run's sampler; this is a {self.kind} run")
        return cfg, model

    def trajectory(self, cfg, model: nn.Module, n: int, every: int, generator: torch.Generator) -> list[Tensor]:
        """Frames (n, C, H, W) of n chains every `every` steps, in the model's pixel range."""
        raise UserError(f"--trajectory and --compare-base need a tilted run or a debm run; this is a {self.kind} run")

    def compare(self, cfg, model: nn.Module, n: int, generator: torch.Generator) -> list[tuple[str, Tensor]]:
        """[(caption, images (n, C, H, W) in the pixel range)] of the same chains, side by side."""
        raise UserError(f"--trajectory and --compare-base need a tilted run or a debm run; this is a {self.kind} run")

    # ---------------------------------------------------------------- OOD scores

    def scores(self, model: nn.Module) -> list[Score]:
        """The OOD scores the loaded model offers (metrics/ood.py)."""
        return []

    def describe(self, model: nn.Module) -> str:
        return f"a {self.kind} run ({type(self.base(model)).__name__})"

    def scorer(self, model: nn.Module) -> Scorer:
        return Scorer(model, self.base(model), self.scores(model), self.describe(model))
