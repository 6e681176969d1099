"""Out-of-distribution detection: score images with a run, and measure how well a score separates sets.

Every score follows one convention: higher = more in-distribution.

    elbo     ELBO(x) = E_q[log p(x | z)] − KL(q(z | x) ‖ p(z)) ≤ log p_base(x)      (nats)
    iwae     log (1/K) Σ_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x)  (Burda et al. 2016; ≥ ELBO on average)
    energy   −E(x)   (−E(x, z), z ~ q(z | x), for a joint energy)
    tilted   ELBO(x) − E(x), the tilted model's unnormalized log-density log p_base(x) − E(x)
    texture  −U_c(x, σ = 0.05), a Denoising-EBM's texture energy (Denoising-EBM paper §5.3)
    regret   −R(x), a VAE's likelihood regret: the ELBO gained by fitting q(z | x) to x alone (Xiao et al. 2020;
             ood_features.py)
    complexity  log p(x) + L(x)·ln 2: the run's log-density (ELBO, or ELBO − E(x) when tilted) plus the PNG
             bits of x in nats (input complexity, Serrà et al. 2020; ood_features.py)
    multiscale  log-density of a Denoising-EBM's denoising errors at 10 σ (Mahmood et al. 2021)
    combined    log-density of every per-image statistic the run has: ELBO (a VAE's as its two terms, reconstruction
             and KL, and its regret), energy, PNG bits, and a Denoising-EBM's denoising errors and the
             log-density of its code under the code prior

multiscale and combined are densities (Gaussian mixtures, ood_features.FeatureDensity) fitted on up to
5,000 in-distribution *training* images before any set is scored; nothing is fitted on test or OOD images.

What a run offers (its Method's `scores`): a base VAE elbo, iwae, regret, complexity, combined; a VAE tilted by an
energy also energy and tilted; a pixel EBM (flat PixelBox base, whose log p_base is one constant) energy
and combined; a Denoising-EBM texture, multiscale and combined.

OOD sets (`--ood`) are either made from the n in-distribution test images scored, with a torch.Generator
seeded by the seed and the set's name (the same set whatever other sets are asked, for every run):

    uniform   every pixel uniform on 0..255
    gaussian  every pixel N(128, 64²), rounded and clipped to 0..255
    constant  each image one colour: one uniform value per channel (gray for one channel)
    noisy     the test images + N(0, σ²) per pixel, σ = 0.1·255, clipped (VAEBM report, Fig. 4)
    interp    the pixel-wise mean of two different test images
    vflip     the test images upside down

or a named data set, folder or .npy/.npz file (`data.images`), test split (a path without one: all
its images), n images drawn at random. A set whose images have another shape than the run's is
RESIZED with a warning (ShapeWarning), not refused: channels 3 → 1 by averaging R, G, B, 1 → 3 by
replication, then an antialiased bilinear resize to the run's H × W (aspect ratio not kept), as
cross-data-set OOD benchmarks usually do (CIFAR-10 vs MNIST); such a set then differs from the
data by its content and by the traces of resizing.
"""

from __future__ import annotations

import enum
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..choices import Score
from ..data.images import IMAGE_SETS, ImageData, load_images, to_model_range, to_uint8
from ..data.source import DataSource
from ..devices import device_of
from ..errors import UserError
from ..generators.base import BaseModel, Capability
from .ood_features import (FIT_N, FeatureDensity, compressed_bits, denoising_errors, elbo_terms, likelihood_regret,
                           multiscale_sigmas)


FITTED = (Score.MULTISCALE, Score.COMBINED)  # scores whose density is fitted on training images first

SCORE_LABELS = {Score.ELBO: "ELBO (nats)", Score.IWAE: "importance-weighted bound, K samples (nats)",
                Score.REGRET: "−likelihood regret (nats)", Score.ENERGY: "−E(x)", Score.TILTED: "ELBO − E(x)",
                Score.TEXTURE: "−U_c(x, σ = 0.05)",
                Score.COMPLEXITY: "log p(x) + L(x)·ln 2 (nats)",
                Score.MULTISCALE: "log-density of the denoising errors", Score.COMBINED: "log-density of the statistics"}


class Synthetic(str, enum.Enum):
    """OOD sets made from the in-distribution test images (module docstring)."""
    UNIFORM = "uniform"
    GAUSSIAN = "gaussian"
    CONSTANT = "constant"
    NOISY = "noisy"
    INTERP = "interp"
    VFLIP = "vflip"


class ShapeWarning(UserWarning):
    """An OOD set's images were resized or recoloured to the run's image shape."""


IW_SAMPLES = 32  # importance samples K of the iwae score
BATCH = 256  # images per forward pass
MIN_N = 20  # images per set: below this, a 95% TPR threshold is just the minimum score
NOISE_SIGMA = 0.1 * 255  # `noisy`: σ of the added Gaussian noise, in uint8 units
GAUSSIAN_MEAN, GAUSSIAN_STD = 128.0, 64.0  # `gaussian`: per-pixel N(mean, std²) before clipping


# ---------------------------------------------------------------- which scores a run offers

@dataclass
class Scorer:
    """What scoring needs of a loaded run (its Method's `scorer`): the model, its base, the scores it offers,
    and how to name it in a message."""

    model: nn.Module
    base: BaseModel
    offered: list[Score]
    description: str


def likelihood_scores(base: BaseModel) -> list[Score]:
    """The likelihood scores a base offers: elbo where it has a log-likelihood (bound), iwae and regret where
    it is a VAE's, complexity with either. A flat PixelBox has none: its log p_base(x) is the same
    for every x."""
    scores = [Score.ELBO] if Capability.LIKELIHOOD in base.capabilities else []
    scores += [Score.IWAE, Score.REGRET] if Capability.IMPORTANCE_WEIGHTED in base.capabilities else []
    return scores + [Score.COMPLEXITY] * (bool(scores) and base.pixel_range is not None)  # bits of images


def check_scores(scores: list[Score], scorer: Scorer) -> None:
    missing = [s for s in scores if s not in scorer.offered]
    if missing:
        has = ", ".join(s.value for s in scorer.offered) or "no OOD score"
        raise UserError(f"score {missing[0].value} is not offered by {scorer.description}; it offers: {has}")


def parse_scores(text: str | None, scorer: Scorer) -> list[Score]:
    """`--scores elbo,energy` as Scores, checked against the run; None: every score the run offers."""
    if text is None:
        if not scorer.offered:
            raise UserError(f"{scorer.description} offers no OOD score")
        return list(scorer.offered)
    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        scores = list(dict.fromkeys(Score(t) for t in names or [""]))  # nothing named: the error below
    except ValueError:
        raise UserError(f"--scores {text!r}: expected a comma-separated list of "
                        f"{', '.join(s.value for s in Score)}") from None
    check_scores(scores, scorer)
    return scores


# ---------------------------------------------------------------- scoring

STATISTICS = ("elbo", "iwae", "terms", "regret", "energy", "texture", "errors", "code", "bits")  # in the order computed


def combined_columns(offered: list[Score]) -> list[str]:
    """The statistics the combined score models for a run offering `offered` (each a column, terms 2 and errors
    L of them): a VAE (iwae offered) gives its ELBO as its two terms, reconstruction and KL, which tell how well
    the image is redrawn from how typical its code is, and its likelihood regret; another likelihood base its
    ELBO or log-likelihood."""
    likelihood = ["terms", "regret"] if Score.IWAE in offered else ["elbo"] * (Score.ELBO in offered)
    cols = likelihood + ["energy"] * (Score.ENERGY in offered) + ["bits"]
    return cols + ["errors", "code"] * (Score.MULTISCALE in offered)  # a Denoising-EBM: its errors and code


def fitted_features(stats: dict[str, np.ndarray], score: Score, offered: list[Score]) -> np.ndarray:
    """(N, F): the statistics a fitted score's density models, one column each (errors: one per σ)."""
    columns = ["errors"] if score is Score.MULTISCALE else combined_columns(offered)
    return np.column_stack([stats[c].reshape(len(stats[c]), -1) for c in columns])


def needed_statistics(scores: list[Score], offered: list[Score]) -> set[str]:
    """The per-image statistics (STATISTICS) that `scores` are made of."""
    need = set()
    for s in scores:
        if s is Score.COMPLEXITY:
            need |= {"elbo", "bits"} | ({"energy"} if Score.TILTED in offered else set())
        elif s is Score.TILTED:
            need |= {"elbo", "energy"}
        elif s is Score.MULTISCALE:
            need.add("errors")
        elif s is Score.COMBINED:
            need |= set(combined_columns(offered))
        else:
            need.add(s.value)
    return need


@torch.no_grad()
def compute_statistics(scorer: Scorer, x: Tensor, need: set[str], generator: torch.Generator | None = None,
                       batch: int = BATCH, iw_samples: int = IW_SAMPLES, quiet: bool = True,
                       desc: str = "scores") -> dict[str, np.ndarray]:
    """The statistics `need` names of images x, batch by batch under no_grad (regret takes its own gradients):
    float64 (N,), terms (N, 2) as (−log p(x | z), KL), errors (N, L).

    x: uint8 (N, C, H, W), mapped to the model's pixel range per batch, or floats already in it.
    Random draws (z ~ q(z | x), the denoisers' ε) come from one generator per statistic on the model's device,
    seeded from `generator` (one draw) and the statistic's name.
    """
    model, base = scorer.model, scorer.base
    device = device_of(model)
    sigmas = multiscale_sigmas(model.sigmas) if "errors" in need else None
    order = [k for k in STATISTICS if k in need]
    # a statistic's draws are the same whatever else is computed beside it
    root = int(torch.randint(2**62, (1,), generator=generator, device=generator.device if generator else None))
    gens = {k: torch.Generator(device).manual_seed((root + zlib.crc32(k.encode())) % 2**62) for k in order}
    parts: dict[str, list] = {k: [] for k in order}
    for lo in tqdm(range(0, len(x), batch), desc=desc, disable=quiet, leave=False):
        raw = x[lo:lo + batch].to(device)
        xb = to_model_range(raw, base.pixel_range) if raw.dtype == torch.uint8 else raw.float()
        got = {"elbo": lambda: base.log_likelihood(xb, gens["elbo"]),
               "iwae": lambda: base.log_likelihood(xb, gens["iwae"], n_importance=iw_samples),
               "terms": lambda: elbo_terms(base, xb, gens["terms"]),
               "regret": lambda: likelihood_regret(base, xb, gens["regret"]),
               "energy": lambda: model.data_energy(xb, gens["energy"]),
               "texture": lambda: -model.ood_score(xb, generator=gens["texture"]),
               "errors": lambda: denoising_errors(model, xb, sigmas, gens["errors"]),
               "code": lambda: model.code_log_density(xb, gens["code"]),
               "bits": lambda: torch.from_numpy(compressed_bits(
                   raw if raw.dtype == torch.uint8 else to_uint8(raw, base.pixel_range)))}
        for k in order:
            parts[k].append(got[k]().double().cpu())
    return {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in parts.items()}


def scores_from(stats: dict[str, np.ndarray], scores: list[Score], offered: list[Score],
                densities: dict[Score, FeatureDensity] | None = None) -> dict[Score, np.ndarray]:
    """Each score (higher = more in-distribution) from the statistics; fitted scores take their density."""
    out = {}
    for s in scores:
        if s in FITTED:
            if not densities or s not in densities:
                raise ValueError(f"score {s.value} needs its density, fitted on training images (fit_densities)")
            out[s] = densities[s].log_density(fitted_features(stats, s, offered))
        elif s is Score.COMPLEXITY:
            log_p = stats["elbo"] - (stats["energy"] if Score.TILTED in offered else 0)
            out[s] = log_p + stats["bits"] * math.log(2)
        elif s is Score.TILTED:
            out[s] = stats["elbo"] - stats["energy"]
        elif s in (Score.ENERGY, Score.TEXTURE, Score.REGRET):
            out[s] = -stats[s.value]
        else:
            out[s] = stats[s.value]
    return out


def fit_densities(stats: dict[str, np.ndarray], scores: list[Score], offered: list[Score],
                  seed: int = 0) -> dict[Score, FeatureDensity]:
    """The densities of the fitted scores among `scores`, from the statistics of in-distribution training images."""
    return {s: FeatureDensity(fitted_features(stats, s, offered), seed) for s in scores if s in FITTED}


def compute_scores(scorer: Scorer, x: Tensor, scores: list[Score], generator: torch.Generator | None = None,
                   batch: int = BATCH, iw_samples: int = IW_SAMPLES, quiet: bool = True, desc: str = "scores",
                   densities: dict[Score, FeatureDensity] | None = None) -> dict[Score, np.ndarray]:
    """Each score of images x: {score: float64 array (N,)} (compute_statistics, then scores_from)."""
    check_scores(scores, scorer)
    stats = compute_statistics(scorer, x, needed_statistics(scores, scorer.offered), generator, batch, iw_samples,
                               quiet, desc)
    return scores_from(stats, scores, scorer.offered, densities)


# ---------------------------------------------------------------- detection metrics

def fpr_at_tpr(scores_in: np.ndarray, scores_out: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of OOD scores ≥ t, t the highest threshold that keeps at least `tpr` of the in-distribution
    scores (≥ t): t is the ⌈tpr·n_in⌉-th largest in-distribution score."""
    k = max(1, math.ceil(tpr * len(scores_in) - 1e-9))
    threshold = np.sort(scores_in)[::-1][k - 1]
    return float(np.mean(scores_out >= threshold))


def detection_metrics(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    """{"auroc", "auprc", "fpr95"} of telling in-distribution from OOD images by a score (higher = in).

    In-distribution is the positive class (label 1) throughout:
      auroc  area under the ROC curve = P(score_in > score_out) + ½ P(tie); 1 perfect, 0.5 chance,
             below 0.5: the score ranks the OOD set as *more* in-distribution
      auprc  average precision (sklearn) with in-distribution as positive; chance is n_in / (n_in + n_out)
      fpr95  fraction of OOD images accepted at the threshold that keeps 95% of in-distribution ones
             (`fpr_at_tpr`); 0 perfect
    NaN or infinite scores raise ValueError.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    s_in, s_out = np.asarray(scores_in, dtype=np.float64), np.asarray(scores_out, dtype=np.float64)
    for v, what in ((s_in, "in-distribution"), (s_out, "OOD")):
        if v.ndim != 1 or len(v) == 0:
            raise ValueError(f"{what} scores: expected a non-empty 1-D array, got shape {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"{int((~np.isfinite(v)).sum())} of {len(v)} {what} scores are NaN or ±inf: "
                             "AUROC and FPR95 need finite scores")
    labels = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    both = np.concatenate([s_in, s_out])
    return {"auroc": float(roc_auc_score(labels, both)), "auprc": float(average_precision_score(labels, both)),
            "fpr95": fpr_at_tpr(s_in, s_out)}


# ---------------------------------------------------------------- OOD sets

def uniform_images(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)


def gaussian_images(shape: tuple[int, ...], generator: torch.Generator, mean: float = GAUSSIAN_MEAN,
                    std: float = GAUSSIAN_STD) -> Tensor:
    return (mean + std * torch.randn(shape, generator=generator)).round().clamp(0, 255).to(torch.uint8)


def constant_images(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Each image one colour: a value uniform on 0..255 per (image, channel), the same at every pixel."""
    n, c = shape[:2]
    value = torch.randint(0, 256, (n, c, 1, 1), generator=generator, dtype=torch.uint8)
    return value.expand(shape).contiguous()


def noisy_images(x: Tensor, generator: torch.Generator, sigma: float = NOISE_SIGMA) -> Tensor:
    return (x.float() + sigma * torch.randn(x.shape, generator=generator)).round().clamp(0, 255).to(torch.uint8)


def interpolated_images(a: Tensor, b: Tensor) -> Tensor:
    """The pixel-wise mean ½(a + b), rounded."""
    return ((a.float() + b.float()) / 2).round().to(torch.uint8)


def vflip(x: Tensor) -> Tensor:
    """Upside down: the rows (H) reversed."""
    return x.flip(-2)


def synthetic_set(kind: Synthetic, x: Tensor, generator: torch.Generator, sigma: float = NOISE_SIGMA) -> Tensor:
    """An OOD set of len(x) uint8 images made from in-distribution images x (N, C, H, W)."""
    kind = Synthetic(kind)
    if kind in (Synthetic.UNIFORM, Synthetic.GAUSSIAN, Synthetic.CONSTANT):
        make = {Synthetic.UNIFORM: uniform_images, Synthetic.GAUSSIAN: gaussian_images,
                Synthetic.CONSTANT: constant_images}[kind]
        return make(tuple(x.shape), generator)
    if kind is not Synthetic.INTERP:
        return noisy_images(x, generator, sigma) if kind is Synthetic.NOISY else vflip(x)
    if len(x) < 2:
        raise UserError("interp mixes two different test images: it needs at least 2")
    perm = torch.randperm(len(x), generator=generator)
    return interpolated_images(x[perm], x[perm.roll(1)])  # image perm[i] with perm[i − 1]: never itself


def conform_shape(x: Tensor, shape: tuple[int, int, int], name: str) -> tuple[Tensor, str | None]:
    """uint8 images x in the run's (C, H, W), with a ShapeWarning saying what was done; (x, note or None).

    Channels: 3 → 1 by the mean of R, G, B, 1 → 3 by replication. Size: antialiased bilinear resize to (H, W).
    """
    c, h, w = shape
    before = tuple(x.shape[1:])
    if before == tuple(shape):
        return x, None
    if x.shape[1] != c and {x.shape[1], c} != {1, 3}:
        raise UserError(f"--ood {name}: images with {x.shape[1]} channels cannot be matched to the run's {c}")
    parts = []
    for chunk in x.split(1024):
        y = chunk.float()
        if y.shape[1] == 3 and c == 1:
            y = y.mean(1, keepdim=True)
        elif y.shape[1] == 1 and c == 3:
            y = y.expand(-1, 3, -1, -1)
        if tuple(y.shape[-2:]) != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        parts.append(y.round().clamp(0, 255).to(torch.uint8))
    how = [f"channels {before[0]} → {c} ({'mean of R, G, B' if c == 1 else 'gray replicated'})"] * (before[0] != c)
    how += [f"antialiased bilinear resize {before[1]}×{before[2]} → {h}×{w}"] * (before[1:] != (h, w))
    note = f"images of shape {before} made {tuple(shape)}: {', '.join(how)}"
    warnings.warn(f"OOD set {name}: {note}", ShapeWarning, stacklevel=2)
    return torch.cat(parts), note


def pick(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n images of x drawn without replacement (all of them, in order, when n ≥ len(x)); kept in file order."""
    if n >= len(x):
        return x
    return x[torch.randperm(len(x), generator=generator)[:n].sort().values]


def load_ood_images(name: str, data_dir: str | None, shape: tuple[int, int, int], n: int,
                    generator: torch.Generator) -> tuple[Tensor, str, str | None]:
    """(uint8 images, source, resize note) of a named set or path: n test images at random, in the run's shape."""
    named = name in IMAGE_SETS
    if not named and not Path(name).expanduser().exists():
        raise UserError(f"--ood {name}: not an OOD set name and no such file or folder; expected "
                        f"{', '.join(s.value for s in Synthetic)}, an image set name ({', '.join(IMAGE_SETS)}), "
                        "an image folder or a .npy/.npz file")

    def load(split: str) -> ImageData:
        return DataSource(name, data_dir).images(split) if named else load_images(name, split)

    try:
        data = load("test")
    except UserError as first:
        if named:
            raise
        try:  # a path without a test split (a .npy, a folder without test/): every image in it
            data = load("train")
        except UserError:
            raise first from None
    x, note = conform_shape(pick(data.x, n, generator), shape, name)
    return x, data.source, note


def parse_ood_sets(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--ood is empty: name at least one OOD set, e.g. uniform,noisy,mnist")
    if (dup := next((t for i, t in enumerate(names) if t in names[:i]), None)) is not None:
        raise UserError(f"--ood lists {dup} twice")
    return names


# ---------------------------------------------------------------- the whole report

@dataclass
class OODReport:
    summary: dict  # JSON-ready: see run_ood
    scores_in: dict[Score, np.ndarray] = field(default_factory=dict)
    scores_out: dict[str, dict[Score, np.ndarray]] = field(default_factory=dict)  # OOD set -> score -> (n,)


def _stats(values: dict[Score, np.ndarray]) -> dict:
    return {s.value: {"mean": round(float(v.mean()), 6), "std": round(float(v.std()), 6)} for s, v in values.items()}


def draw_sets(test_x: Tensor, in_name: str, ood: list[str], shape: tuple[int, int, int], n: int, seed: int = 0,
              data_dir: str | None = None, sigma: float = NOISE_SIGMA
              ) -> tuple[Tensor, dict[str, tuple[Tensor, str, str | None]]]:
    """(n in-distribution test images, {set: (uint8 images, source, resize note)}), drawn from `seed` and each
    set's name alone, so every run and every caller sees the same images."""
    x_in = pick(test_x, n, torch.Generator().manual_seed(seed))
    sets: dict[str, tuple[Tensor, str, str | None]] = {}
    for name in ood:
        gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**62)  # seed + name
        if name in {s.value for s in Synthetic}:
            sets[name] = (synthetic_set(Synthetic(name), x_in, gen, sigma), f"made from the {n} {in_name} test images",
                          None)
        else:
            x, src, note = load_ood_images(name, data_dir, shape, n, gen)
            if len(x) < MIN_N:
                raise UserError(f"--ood {name}: {len(x)} images, OOD metrics need at least {MIN_N}")
            sets[name] = (x, src, note)
    return x_in, sets


def fit_on_training(scorer: Scorer, in_source: DataSource, scores: list[Score], seed: int = 0, batch: int = BATCH,
                    iw_samples: int = IW_SAMPLES, quiet: bool = True) -> dict[Score, FeatureDensity]:
    """The densities of the fitted scores among `scores`, on up to FIT_N training images of `in_source` drawn
    by `seed` ({} when none is asked for)."""
    fitted = [s for s in scores if s in FITTED]
    if not fitted:
        return {}
    train = in_source.images("train")
    shape = tuple(scorer.base.data_shape)
    if tuple(train.shape) != shape:
        raise UserError(f"--in {in_source.name}: training images of shape {tuple(train.shape)}, the run's are {shape}")
    x_fit = pick(train.x, FIT_N, torch.Generator().manual_seed(seed))
    stats = compute_statistics(scorer, x_fit, needed_statistics(fitted, scorer.offered),
                               torch.Generator(device_of(scorer.model)).manual_seed(seed), batch, iw_samples, quiet,
                               desc=f"statistics: {in_source.name} training images")
    try:
        return fit_densities(stats, fitted, scorer.offered, seed)
    except ValueError as exc:  # too few training images, or statistics that are not finite
        raise UserError(f"scores {', '.join(s.value for s in fitted)} on {in_source.name}: {exc}") from None


def run_ood(scorer: Scorer, in_source: DataSource, ood: list[str], scores: list[Score] | None = None,
            n: int | None = None, seed: int = 0, data_dir: str | None = None, iw_samples: int = IW_SAMPLES,
            sigma: float = NOISE_SIGMA, batch: int = BATCH, quiet: bool = True) -> OODReport:
    """Score n in-distribution test images and n images of each OOD set; detection metrics per set and score.

    The summary: {"in", "source", "n", "seed", "scores", "iw_samples", "noise_sigma",
    "sets": {set: {"n", "source", "resized"}}, "results": {set: {score: {"auroc", "auprc", "fpr95"}}},
    "stats": {"in": {score: {"mean", "std"}}, "ood": {set: {score: {"mean", "std"}}}}}, and for fitted scores
    "fit": {"n", "components": {score: k}}: their densities, fitted on up to FIT_N training images of
    `in_source` (drawn by `seed`) before anything else is scored.
    Every OOD set is loaded or made before any scoring, so bad input fails fast.
    """
    base = scorer.base
    if base.pixel_range is None:
        raise UserError("OOD scoring is for image runs; this run models points")
    scores = scores if scores is not None else scorer.offered
    check_scores(scores, scorer)
    test = in_source.images("test")
    shape = tuple(base.data_shape)
    if tuple(test.shape) != shape:
        raise UserError(f"--in {in_source.name} has images of shape {tuple(test.shape)}, the run's are {shape}")
    n = len(test) if n is None else n
    if n > len(test):
        raise UserError(f"--n {n}: the {in_source.name} test split has only {len(test)} images")
    if n < MIN_N:
        raise UserError(f"--n {n}: OOD metrics need at least {MIN_N} images per set")
    x_in, sets = draw_sets(test.x, in_source.name, ood, shape, n, seed, data_dir, sigma)

    device = device_of(scorer.model)
    densities = fit_on_training(scorer, in_source, scores, seed, batch, iw_samples, quiet)
    fit = {"fit": {"n": next(iter(densities.values())).n,
                   "components": {s.value: d.components for s, d in densities.items()}}} if densities else {}

    def score(x: Tensor, what: str) -> dict[Score, np.ndarray]:
        gen = torch.Generator(device).manual_seed(seed)  # the same draws for every set: paired for noisy/vflip
        values = compute_scores(scorer, x, scores, gen, batch, iw_samples, quiet, desc=f"scores: {what}",
                                densities=densities)
        for s, v in values.items():
            if not np.isfinite(v).all():
                raise UserError(f"score {s.value} on {what}: {int((~np.isfinite(v)).sum())} of {len(v)} values "
                                "are NaN or ±inf")
        return values

    report = OODReport({}, score(x_in, f"{in_source.name} (in-distribution)"))
    results, stats = {}, {}
    for name, (x, _, _) in sets.items():
        report.scores_out[name] = values = score(x, f"OOD set {name}")
        results[name] = {s.value: {k: round(v, 6) for k, v in detection_metrics(report.scores_in[s], values[s]).items()}
                         for s in scores}
        stats[name] = _stats(values)
    report.summary = {
        "in": in_source.name, "source": test.source, "n": n, "seed": seed, "scores": [s.value for s in scores],
        **({"iw_samples": iw_samples} if Score.IWAE in scores else {}), "noise_sigma": sigma,
        "sets": {k: {"n": len(x), "source": src, "resized": note} for k, (x, src, note) in sets.items()},
        "results": results, "stats": {"in": _stats(report.scores_in), "ood": stats}, **fit}
    return report
