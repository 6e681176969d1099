"""Tilt the user's own generator (`tiltkit.fit_tilt`, `tiltkit train tilt --base-module`): the tilt Method
on a ModuleBase, with the data given as an array or named as for any run.

The run directory is a tilt's, and its checkpoints hold the base's weights as well as the energy's:
loading it again checks that the generator given (or rebuilt by the recorded factory) has exactly the
weights the energy was trained on.

A factory (`--base-module my_models:make_generator`) is a function of no arguments, importable from
PYTHONPATH, that returns either a base made by `tiltkit.as_base(...)`, or an nn.Module generator with a
`noise_shape` attribute (or `--set noise_shape=[d]`) and, for images, a `pixel_range` attribute (or
`--set pixel_range=unit|symmetric`).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..config import CUSTOM_ENERGY, ModuleTiltRunConfig
from ..data.images import to_model_range
from ..data.source import DataSource
from ..devices import resolve_device
from ..errors import UserError
from ..generators import ModuleBase
from ..generators.box import BOUNDS
from ..tilt import TiltedModel
from .builders import build_energy, tilted_model
from .checkpoint import read_weights
from .contrastive import TiltMethod, fit_energy, training_data
from .distributed import Distributed
from .rundir import data_shape_of, read_run_checkpoint


def as_base(generator: nn.Module, noise_shape, *, log_likelihood=None, encode=None, decode_mean=None,
            pixel_range: str | None = None) -> ModuleBase:
    """A ModuleBase (generators/module_base.py), every refusal as one UserError."""
    try:
        return ModuleBase(generator, noise_shape, log_likelihood=log_likelihood, encode=encode,
                          decode_mean=decode_mean, pixel_range=pixel_range)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def base_from_factory(spec: str, noise_shape: list | None = None, pixel_range: str | None = None) -> ModuleBase:
    """The base `module:factory` returns (see the module docstring); one UserError for every failure."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise UserError(f"--base-module {spec!r}: expected MODULE:FACTORY, e.g. my_models:make_generator")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any error at import is theirs to see in one line
        raise UserError(f"--base-module {spec}: cannot import {module_name} ({type(exc).__name__}: {exc}); "
                        f"is its folder on PYTHONPATH?") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"--base-module {spec}: {module_name} has no function {name!r}")
    try:
        made = factory()
    except Exception as exc:
        raise UserError(f"--base-module {spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if isinstance(made, ModuleBase):
        return made
    if not isinstance(made, nn.Module):
        raise UserError(f"--base-module {spec}: the factory returned a {type(made).__name__}; expected an "
                        f"nn.Module generator or a base made by tiltkit.as_base")
    shape = noise_shape or getattr(made, "noise_shape", None)
    if shape is None:
        raise UserError(f"--base-module {spec}: the generator has no noise_shape attribute; pass "
                        f"--set noise_shape=[d] or return tiltkit.as_base(generator, noise_shape=(d,))")
    return as_base(made, shape, pixel_range=pixel_range or getattr(made, "pixel_range", None))


def array_data(data, base: ModuleBase) -> Tensor:
    """A tensor or array (N, *data_shape) of floats (or uint8 images) as float32 positives in the base's range."""
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "fu" or data.dtype.kind == "u" and data.dtype != np.uint8:
            raise UserError(f"data: expected floating-point values (or uint8 images), got an array of {data.dtype}")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, Tensor):
        raise UserError(f"data: expected a tensor, a numpy array or a data name, got {type(data).__name__}")
    if data.dtype == torch.uint8:
        if base.pixel_range is None:
            raise UserError("data: uint8 values are for images; the generator makes points: give floats")
        data = to_model_range(data, base.pixel_range)
    elif not data.is_floating_point():
        raise UserError(f"data: expected floating-point values (or uint8 images), got {data.dtype}")
    x = data.detach().cpu().float()
    if tuple(x.shape[1:]) != base.data_shape or len(x) < 2:
        raise UserError(f"data has shape {tuple(x.shape)}; the generator makes samples of shape {base.data_shape}: "
                        f"expected (N, {', '.join(map(str, base.data_shape))}) with N ≥ 2")
    bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
    if bad:
        raise UserError(f"data: {bad} of {len(x)} examples hold NaN or inf")
    if base.pixel_range is not None:
        lo, hi = BOUNDS[base.pixel_range]
        if x.min() < lo - 1e-3 or x.max() > hi + 1e-3:
            raise UserError(f"data: image values span [{x.min():.3g}, {x.max():.3g}], outside the base's pixel range "
                            f"[{lo:g}, {hi:g}]")
    return x


def sha256_of(x: Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes()).hexdigest()


def same_weights(checkpoint: Path, module: nn.Module, run_dir: Path) -> None:
    """Refuse a base whose weights differ from those checkpoint `checkpoint` holds under "base."."""
    stored = {k[len("base."):]: v for k, v in read_weights(checkpoint).items() if k.startswith("base.")}
    given = module.state_dict()
    if set(stored) != set(given):
        odd = sorted(set(stored) ^ set(given))
        raise UserError(f"{run_dir} was trained on another base: {len(odd)} tensor names differ (e.g. {odd[0]}); "
                        f"pass the generator, with the same as_base(...) parts, it was trained on")
    differ = [k for k, v in given.items() if v.shape != stored[k].shape or not torch.equal(v.cpu(), stored[k])]
    if differ:
        raise UserError(f"{run_dir} was trained on a generator with other weights: {len(differ)} of {len(given)} "
                        f"tensors differ (e.g. {differ[0]}); load it with the generator it was trained on")


class ModuleTiltMethod(TiltMethod):
    """A tilt of the user's own generator: the tilt's sampling, scores and pictures on a ModuleBase."""

    kind = "tilt-module"
    config_class = ModuleTiltRunConfig
    selected_by = "base_module"
    inputs = ("base", "energy")

    def check_command_line(self, cfg: ModuleTiltRunConfig, given_data: bool) -> None:
        if cfg.data is None:
            raise UserError("train tilt --base-module: --data is required (a data set name or file)")

    def train(self, cfg: ModuleTiltRunConfig, out: Path, resume: bool = False, quiet: bool = False,
              dist: Distributed = Distributed(), base: ModuleBase | None = None, data=None,
              energy: nn.Module | None = None) -> TiltedModel:
        """`base`, `data`, `energy`: the user's objects (else the config's factory, data name, energy name)."""
        if cfg.eval_every and dist.enabled:
            raise UserError("eval_every: validation by domain FID runs in single-process training only")
        base = self.resolve_base(cfg, base).to(resolve_device(cfg.device))
        cfg.noise_shape = list(base.noise_shape)
        cfg.pixel_range = base.pixel_range.value if base.pixel_range is not None else None
        if data is None or isinstance(data, (str, Path)):
            if data is not None:
                cfg.data = str(data)
            if cfg.data is None:
                raise UserError("no data: pass data (an array or a data name) or set data")
            x_train, validator = training_data(cfg, DataSource.of(cfg), None, base, quiet)
            if tuple(x_train.shape[1:]) != base.data_shape:
                raise UserError(f"--data {cfg.data} holds examples of shape {tuple(x_train.shape[1:])}; the generator "
                                f"makes samples of shape {base.data_shape}")
        else:
            if cfg.eval_every:
                raise UserError("eval_every: validation needs a named, labelled image set as data, not an array")
            x_train, validator = array_data(data, base), None
            digest = sha256_of(x_train)
            if resume and cfg.data_sha256 not in (None, digest):
                raise UserError(f"--resume: the data given is not the array {out} was trained on (SHA-256 differs)")
            cfg.data, cfg.data_sha256 = None, digest
        if energy is None:
            if cfg.energy == CUSTOM_ENERGY:
                raise UserError("energy: custom means your own energy module: pass it, fit_tilt(..., energy=module)")
            energy = build_energy(cfg, base.data_shape)
        else:
            if not isinstance(energy, nn.Module):
                raise UserError(f"energy: expected an nn.Module or an energy name, got {type(energy).__name__}")
            cfg.energy, cfg.energy_kwargs = CUSTOM_ENERGY, {}
        return fit_energy(self, cfg, out, base, energy, x_train, validator, resume, quiet, dist, lambda out: None)

    def resolve_base(self, cfg: ModuleTiltRunConfig, base: ModuleBase | nn.Module | None) -> ModuleBase:
        """The user's base: as given (a bare generator is wrapped with the recorded noise shape), else the factory's."""
        if base is None:
            if cfg.base_module is None:
                raise UserError("this run tilts your own generator and records no factory: pass the generator, "
                                "tiltkit.load(run, base=generator) (or fit_tilt(as_base(generator, ...), ..., "
                                "resume=True) to train on)")
            return base_from_factory(cfg.base_module, cfg.noise_shape, cfg.pixel_range)
        if isinstance(base, ModuleBase):
            return base
        if isinstance(base, nn.Module) and cfg.noise_shape is not None:
            return as_base(base, tuple(cfg.noise_shape), pixel_range=cfg.pixel_range)
        raise UserError(f"base: expected a base made by tiltkit.as_base(generator, noise_shape=...), "
                        f"got {type(base).__name__}")

    def build(self, run_dir: Path, cfg: ModuleTiltRunConfig, data_shape: tuple[int, ...],
              base: ModuleBase | nn.Module | None = None, energy: nn.Module | None = None) -> TiltedModel:
        base = self.resolve_base(cfg, base)
        if base.data_shape != tuple(data_shape):
            raise UserError(f"{run_dir} was trained on samples of shape {tuple(data_shape)}; the generator given "
                            f"makes {base.data_shape}")
        if cfg.energy == CUSTOM_ENERGY and energy is None:
            raise UserError(f"{run_dir} was trained with your own energy module: pass one of the same class, "
                            f"tiltkit.load(run, base=..., energy=module)")
        return tilted_model(cfg, base, energy if energy is not None else build_energy(cfg, data_shape))

    def load(self, run_dir: Path, cfg: ModuleTiltRunConfig, device: torch.device,
             base: ModuleBase | nn.Module | None = None, energy: nn.Module | None = None) -> TiltedModel:
        """The run's tilted model on the given (or factory-made) base, refused unless its weights are the run's;
        a checkpoint rotated away while it is read is picked again (rundir.read_run_checkpoint)."""
        def read(ckpt: Path) -> TiltedModel:
            model = self.build(run_dir, cfg, data_shape_of(ckpt), base, energy)
            same_weights(ckpt, model.base, run_dir)
            return self.load_weights(ckpt, {"energy": model.energy}, model, device)
        return read_run_checkpoint(run_dir, read)

    def data_config(self, run_dir: Path, cfg: ModuleTiltRunConfig) -> ModuleTiltRunConfig:
        return cfg  # its own data (None where an array was given)

    def describe(self, model: TiltedModel) -> str:
        return f"a tilted run (energy on your {type(model.base.generator).__name__})"


MODULE_TILT = ModuleTiltMethod()
