"""Run options: one dataclass per command, resolved once and saved as the run's config.yaml.

Every option has one home here; a YAML file, the command line and the defaults all flow
into these classes through `from_dict`, which refuses unknown keys and bad values.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import subprocess
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import yaml

from .atomic import atomic_write_text
from .choices import MAX_SEED, LogBackend, Precision
from .devices import resolve_device
from .errors import UserError
from .samplers import AnnealedConfig, CompileMode, SamplerConfig, SamplerKind


class DivergenceAction(str, enum.Enum):
    """What a run does when a step diverges (training.loop.RunState.recover)."""

    STOP = "stop"  # log the event and stop with a message; the last good checkpoint stays
    ROLLBACK = "rollback"  # reload the last good checkpoint; lr and chain step sizes × rollback_factor, new seeds


@dataclass
class Reliability:
    """Options every trainer shares: precision, the divergence policy and the logger (mixed into each run config)."""

    precision: Precision = Precision.FP32  # "32", "bf16" (autocast, CPU or GPU) or "fp16" (GPU, with a grad scaler)
    on_divergence: DivergenceAction = DivergenceAction.STOP
    max_rollbacks: int = 3  # rollbacks before the run stops anyway
    rollback_factor: float = 0.5  # each rollback multiplies the lr and the training chains' step sizes by this
    log: LogBackend = LogBackend.JSONL  # "tensorboard": also TensorBoard event files in RUN/tensorboard
    log_images_every: int = 0  # log tensorboard, image runs: a grid of samples every this many steps (0: at each checkpoint)


# The toy recipe's network sizes, for the default model and energy alone: a model or energy named without
# kwargs gets these if it is the default one, else its own class's defaults ({}). A config resolves its
# kwargs once, when it is built, and saves them resolved.
DEFAULT_MODEL, DEFAULT_MODEL_KWARGS = "vae", {"latent_dim": 2, "hidden": 128, "depth": 3}
DEFAULT_ENERGY = "mlp"
DEFAULT_ENERGY_KWARGS = {"hidden": 128, "depth": 3, "fourier_features": 64, "fourier_scale": 1.0}


@dataclass
class BaseRunConfig(Reliability):
    """`tiltkit train base`: fit a generator to data."""

    data: str = "25gaussians"  # a toy set or point file, or an image set name, folder or array file
    data_dir: str | None = None  # where image sets are looked for first (else $TILTKIT_DATA_DIR, /usr/share/datasets)
    image_size: int | None = None  # image folders: centre-crop and resize to this size
    model: str = DEFAULT_MODEL
    model_kwargs: dict | None = None  # None: DEFAULT_MODEL_KWARGS for the default model, else the model's own
    steps: int = 3000
    batch_size: int = 512
    lr: float = 2e-3
    lr_final: float = 1e-4  # cosine decay from lr to lr_final
    warmup_steps: int = 0  # linear lr warm-up over the first steps (Glow practice), 0: none
    grad_clip: float | None = None  # clip the gradient norm to this (None: no clipping; the norm is logged)
    n_train: int | None = None  # None: 50,000 points of a toy set, or every training image
    hflip: bool = False  # random horizontal flips of training images
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.model_kwargs is None:
            self.model_kwargs = dict(DEFAULT_MODEL_KWARGS) if self.model == DEFAULT_MODEL else {}


NO_BASE = "none"  # TiltRunConfig.base for a pixel EBM: no base run, a flat prior on the pixel box


@dataclass
class TiltRunConfig(Reliability):
    """`tiltkit train tilt`: fit an energy on a frozen base by contrastive divergence."""

    base: str = ""  # the base run directory, or "none": a pixel EBM on the flat box of `data` (IGEBM baseline)
    data: str | None = None  # base "none" only: the data set, as in a base run
    data_dir: str | None = None
    image_size: int | None = None
    pixel_range: str = "unit"  # base "none" only: the box, [0, 1] ("unit") or [-1, 1] ("symmetric")
    energy: str = DEFAULT_ENERGY
    energy_kwargs: dict | None = None  # None: DEFAULT_ENERGY_KWARGS for the default energy, else the energy's own
    steps: int = 500
    batch_size: int = 256
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    alpha: float = 0.1  # energy L2 regularization α·(E⁺² + E⁻²), tilting paper B.2
    grad_clip: float = 1.0
    # Toy recipe: Langevin ε = 0.01 as in the tilting paper, with the Metropolis test (MALA): plain ULA
    # at this step size collapses 25-Gaussians onto a few modes once the energy wells are sharp.
    train_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(SamplerKind.MALA, 60, 0.01))
    sample_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(SamplerKind.MALA, 300, 0.01))
    persistent: bool = False  # chains from a replay buffer in noise space instead of fresh N(0, I)
    buffer_size: int = 10_000
    reinit_prob: float = 0.05
    # VAEBM (Xiao et al. 2021): the replay probability 1 − reinit_prob rises linearly from 0 at step 0 to
    # `replay_max` at step `replay_anneal_steps` and stays there (their max_p, anneal_step); None: fixed reinit_prob.
    replay_max: float | None = None
    replay_anneal_steps: int = 1
    pixel_noise: bool = False  # chains over (ε_z, ε_x), x = μ(ε_z) + σ·ε_x (VAEBM; a Gaussian-decoder VAE)
    use_mu: bool = False  # VAEBM's use_mu_cd: the decoder mean μ(ε_z) is the CD negative and the output sample
    weight_decay: float = 0.0  # Adam's L2 weight decay on the energy (VAEBM: 3e-5)
    spectral_reg: float = 0.0  # λ_s·Σ_l σ_max(W_l) added to the loss (VAEBM's alpha_s: 0.2); energies/spectral.py
    compile: str = "auto"  # "auto": torch.compile U when the run is long enough to repay it; "on"; "off"
    compile_mode: str = "fused"  # samplers.compiled.CompileMode: "fused" (MLPs) or "autograd" (conv nets)
    # Early stopping on images (tilting paper §5.3): every `eval_every` steps, the domain FID of `eval_n`
    # samples against `val_size` training images held out from the positives; the best step is kept
    # as RUN/checkpoints/best, and training stops after `patience` evaluations without improvement.
    eval_every: int = 0  # 0: no validation
    eval_n: int = 1000
    val_size: int = 5000
    patience: int = 0  # 0: never stop early (the best checkpoint is still kept)
    max_energy: float | None = 1e6  # |energy| of data or chains past this counts as divergence (None: no limit)
    checkpoint_every: int = 250
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.energy_kwargs is None:
            self.energy_kwargs = dict(DEFAULT_ENERGY_KWARGS) if self.energy == DEFAULT_ENERGY else {}


CUSTOM_ENERGY = "custom"  # ModuleTiltRunConfig.energy when the user passed their own energy module


@dataclass
class ModuleTiltRunConfig(TiltRunConfig):
    """`tiltkit.fit_tilt` / `tiltkit train tilt --base-module`: an energy on the user's own generator.

    Recorded at the start of a run from the base itself: `noise_shape` and `pixel_range` (images), so that
    `tiltkit.load(run, base=generator)` can wrap a bare generator again. `data` names the data (a set,
    folder or file); for data given to fit_tilt as an array it is None and `data_sha256` is the array's
    checksum, which a resumed run must match. `energy: custom`: the user's own energy module.
    """

    base_module: str | None = None  # "module:factory" the run rebuilds its base from; None: given in Python
    noise_shape: list | None = None  # the base's noise shape
    pixel_range: str | None = None  # images: "unit" ([0, 1]) or "symmetric" ([-1, 1]); None for points
    data_sha256: str | None = None  # data given as an array: its SHA-256 (float32 bytes)


class TextureSampler(str, enum.Enum):
    """The Denoising-EBM's second sampling stage (denoising.DenoisingEBM.sample)."""

    PAPER = "paper"  # eq. 16: Langevin on U_c(x, σ); for Gaussian data it samples N(μ, (C + σ²I)²/σ²), docs/debm_texture.md
    ANNEALED = "annealed"  # annealed Langevin on the denoiser's score (Song & Ermon 2019), samplers/annealed.py


@dataclass
class DebmRunConfig(Reliability):
    """`tiltkit train debm`: a Denoising-EBM by its Algorithm 1 (denoising.py, training/denoising.py).

    Langevin steps are tiltkit's ε − (η/2)∇U + √η·ω: the paper's η₁ = 0.1, η₂ = 0.01 of eqs. 15–16 are
    step_size 0.2 and 0.02 here.
    """

    data: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int | None = None
    n_train: int | None = None
    hflip: bool = True  # §5: random flips, p = 0.5
    model_kwargs: dict = field(default_factory=lambda: {
        "width": 32, "latent_dim": 64, "decoder_width": 32, "sigma_max": 1.0, "sigma_min": 0.01, "n_sigmas": 128})
    steps: int = 1000  # iterations in all: `pretrain_steps` reconstruction-only ones, then Algorithm 1's outer loop
    pretrain_steps: int = 0  # first iterations: one reconstruction step each, no chains (not in the paper)
    recon_steps: int = 3  # L: reconstruction steps per iteration
    batch_size: int = 64
    lr: float = 5e-5  # §5: Adam, 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None  # clip each update's gradient norm (None: off; the norm is logged)
    alpha: float = 0.0  # α·(u⁺² + u⁻²) on the per-pixel energies of the contrastive losses (0: the paper's)
    latent_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(SamplerKind.LANGEVIN, 20, 0.2))
    pixel_sampler: SamplerConfig = field(
        default_factory=lambda: SamplerConfig(SamplerKind.LANGEVIN, 90, 0.02, clamp=(-1.0, 1.0)))
    sample_latent_sampler: SamplerConfig | None = field(  # None: no semantic chain, x⁰ = h(z⁰) (docs/debm_texture.md)
        default_factory=lambda: SamplerConfig(SamplerKind.LANGEVIN, 35, 0.2))  # §5.2: 35 latent steps
    sample_pixel_sampler: SamplerConfig = field(
        default_factory=lambda: SamplerConfig(SamplerKind.LANGEVIN, 100, 0.02, clamp=(-1.0, 1.0)))  # and 100 pixel steps
    texture_sampler: TextureSampler = TextureSampler.ANNEALED  # how samples are refined; "paper": sample_pixel_sampler
    sample_annealed: AnnealedConfig = field(default_factory=lambda: AnnealedConfig(clamp=(-1.0, 1.0)))
    sample_sigma: float | None = None  # the σ of sampling chains; None: each chain draws one from the ladder
    max_energy: float | None = 1e6  # |loss| of the contrastive updates past this counts as divergence (None: no limit)
    checkpoint_every: int = 250
    seed: int = 0
    device: str = "auto"


def to_dict(cfg) -> dict:
    """Plain YAML-ready dict (enums as their values, tuples as lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (tuple, list)):
            return [plain(i) for i in v]
        if isinstance(v, dict):
            return {k: plain(i) for k, i in v.items()}
        return v
    return plain(cfg)


def from_dict(cls, values: dict, where: str = "config"):
    """Build dataclass `cls` from `values`, checking keys and coercing types."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in values.items()}
    try:
        cfg = cls(**kwargs)
    except ValueError as exc:  # a dataclass's own consistency check (e.g. SamplerConfig)
        raise UserError(f"{where}: {exc}") from None
    validate(cfg, where)
    return cfg


def _coerce(hint, value, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(hint, value, where)
    try:
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            if issubclass(hint, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # YAML reads `precision: 32` as a number
            return hint(value)
        if origin is tuple:
            return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
        if hint is bool:
            if isinstance(value, str):
                return {"true": True, "false": False, "1": True, "0": False}[value.lower()]
            return bool(value)
        if hint is str and isinstance(value, bool):  # YAML 1.1 reads a bare on/off as a bool
            return "on" if value else "off"
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(value)
        if hint is dict or origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (ValueError, TypeError, KeyError):
        raise UserError(f"{where}: invalid value {value!r}") from None
    return value


POSITIVE = ("steps", "batch_size", "lr", "step_size", "n_train", "checkpoint_every", "buffer_size", "n_leapfrog",
            "grad_clip", "image_size", "eval_n", "val_size", "replay_anneal_steps", "recon_steps", "sample_sigma",
            "max_energy")
NON_NEGATIVE = ("warmup_steps", "weight_decay", "spectral_reg", "pretrain_steps", "alpha", "max_rollbacks",
                "log_images_every")


def validate(cfg, where: str) -> None:
    """Non-positive counts, sizes and rates (negative weights) are refused with the key that is wrong."""
    for name in POSITIVE:
        value = getattr(cfg, name, None)
        if value is not None and not value > 0:
            raise UserError(f"{where}.{name} must be positive, got {value}")
    for name in NON_NEGATIVE:
        value = getattr(cfg, name, 0)
        if value < 0:
            raise UserError(f"{where}.{name} must be 0 or more, got {value}")
    seed = getattr(cfg, "seed", 0)
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"{where}.seed must be in [0, 2**63 - 1], got {seed}")
    betas = getattr(cfg, "betas", (0.0, 0.0))
    if not all(0 <= b < 1 for b in betas):
        raise UserError(f"{where}.betas must both be in [0, 1), got {list(betas)}")
    if isinstance(cfg, Reliability) and not 0 < cfg.rollback_factor < 1:
        raise UserError(f"{where}.rollback_factor must be in (0, 1), got {cfg.rollback_factor}")
    if isinstance(cfg, DebmRunConfig):
        low = cfg.model_kwargs.get("sigma_min", 0.01)
        if not cfg.sample_annealed.sigma_start > low:
            raise UserError(f"{where}.sample_annealed.sigma_start must be above the ladder's smallest σ "
                            f"(model_kwargs.sigma_min = {low:g}), got {cfg.sample_annealed.sigma_start:g}")
    if isinstance(cfg, TiltRunConfig):
        if not 0 <= cfg.reinit_prob <= 1:
            raise UserError(f"{where}.reinit_prob must be in [0, 1], got {cfg.reinit_prob}")
        if cfg.replay_max is not None and not 0 <= cfg.replay_max <= 1:
            raise UserError(f"{where}.replay_max must be in [0, 1], got {cfg.replay_max}")
        module = isinstance(cfg, ModuleTiltRunConfig)
        if cfg.pixel_range not in ("unit", "symmetric") and not (module and cfg.pixel_range is None):
            raise UserError(f"{where}.pixel_range must be unit or symmetric, got {cfg.pixel_range!r}")
        if module and cfg.base:
            raise UserError(f"{where}.base names a base run; a tilt of your own generator takes base_module or "
                            f"tiltkit.fit_tilt(base, ...)")
        if module and cfg.noise_shape is not None and not (cfg.noise_shape and all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in cfg.noise_shape)):
            raise UserError(f"{where}.noise_shape must be a list of positive ints, got {cfg.noise_shape!r}")
        if not module and cfg.base == NO_BASE and not cfg.data:
            raise UserError(f"{where}: a pixel EBM (base: none) needs data: the data set to fit")
        if not module and cfg.base != NO_BASE and cfg.data:
            raise UserError(f"{where}.data is for a pixel EBM (base: none); a tilt on a base run uses the base's data")
        if cfg.eval_every < 0 or cfg.patience < 0:
            raise UserError(f"{where}.eval_every and .patience must be 0 or more")
        if cfg.compile not in ("auto", "on", "off"):
            raise UserError(f"{where}.compile must be auto, on or off, got {cfg.compile!r}")
        modes = [m.value for m in CompileMode]
        if cfg.compile_mode not in modes:
            raise UserError(f"{where}.compile_mode must be one of {', '.join(modes)}, got {cfg.compile_mode!r}")


def save_yaml(cfg, path: Path, kind: str) -> None:
    """Write a run's config.yaml: its kind, its options, and its provenance (`provenance`), whose start time a
    rewrite of the same run's config (a resume that extends it) keeps."""
    path = Path(path)
    try:
        before = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        before = None
    was = before.get("provenance") if isinstance(before, dict) else None
    started = was.get("started") if isinstance(was, dict) else None
    record = {"kind": kind, **to_dict(cfg), "provenance": provenance(cfg.device, started)}
    atomic_write_text(path, yaml.safe_dump(record, sort_keys=False))


def provenance(device: str, started: str | None = None) -> dict:
    """What made a run: the tiltkit and torch versions, the git commit of the checkout tiltkit runs from (None
    for an installed package), the device actually used, the start time."""
    try:
        version = importlib.metadata.version("tiltkit")
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"tiltkit": version, "torch": str(torch.__version__), "git_commit": commit,
            "device": str(resolve_device(device)),
            "started": started or datetime.now().astimezone().isoformat(timespec="seconds")}


def read_yaml(path: Path) -> tuple[str | None, dict]:
    """(kind, options) of a run's config.yaml; the options are checked by `from_dict` with the kind's class."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the run config ({exc.__class__.__name__})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: not a tiltkit run config (expected a mapping with a 'kind')")
    kind = values.pop("kind", None)
    values.pop("provenance", None)  # a record of how the run was made, not an option
    return kind if isinstance(kind, str) else None, values


def read_config(path: Path, cls, kind: str):
    """The config of class `cls` in `path`, which must be of kind `kind` (e.g. a tilt's base run)."""
    found, values = read_yaml(path)
    if found != kind:
        raise UserError(f"{Path(path).parent} is a {found or 'unknown'} run: expected a {kind} run")
    return from_dict(cls, values, str(path))
