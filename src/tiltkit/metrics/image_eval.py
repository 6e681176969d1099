"""Sample quality of image models: domain metrics, Inception FID, and the real-data floor.

Two scales, never mixed (docs/design.md): "domain" figures live in the feature space of a
classifier the project trains on the data set (features.py), Inception FID in that of
the standard FID Inception-v3. Every report holds the model's figures and the floor:
the same figures for n real training images against the test set.
"""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..choices import InceptionRuntime
from ..data.images import IMAGE_SETS, ImageData, PixelRange, load_images, to_uint8
from ..data.source import DataSource
from ..errors import UserError
from .features import (DomainClassifier, InceptionFeatures, default_cache_dir, domain_classifier, domain_metrics,
                       extract_features)
from .fid import FeatureStats, frechet_distance


class Metric(str, enum.Enum):
    FID = "fid"  # domain FID
    KID = "kid"  # domain KID
    PRDC = "prdc"  # precision, recall (k = 3), density, coverage (k = 5) on domain features
    CLASSES = "classes"  # KL of the data's class histogram to the samples'
    INCEPTION_FID = "inception-fid"


INCEPTION_BATCH = 100  # images per Inception forward pass: ~1 GB of activations on the CPU
DOMAIN = (Metric.FID, Metric.KID, Metric.PRDC, Metric.CLASSES)
DOMAIN_KEYS = {Metric.FID: ("fid",), Metric.KID: ("kid", "kid_std"),
               Metric.PRDC: ("precision", "recall", "density", "coverage"), Metric.CLASSES: ("class_kl",)}


def parse_metrics(text: str) -> list[Metric]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [Metric(t) for t in names]
    except ValueError:
        raise UserError(f"--metrics {text!r}: expected a comma-separated list of "
                        f"{', '.join(m.value for m in Metric)}") from None


def classifier_for(source: DataSource, quiet: bool = True) -> DomainClassifier:
    """The domain classifier of a labelled image set, trained once and cached by the set's checksum."""
    train = source.images("train")
    if train.y is None:
        raise UserError(f"--data {source.name} has no labels: domain metrics need a labelled set "
                        "(use --metrics inception-fid)")
    return domain_classifier(train.x, train.y, int(train.y.max()) + 1, train.checksum(), quiet=quiet)


@torch.no_grad()
def embed(classifier: DomainClassifier, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F), predicted classes (N,)) of uint8 images x (N, C, H, W)."""
    classifier.eval()
    feats = extract_features(classifier.features, x)
    labels = extract_features(lambda b: classifier(b).argmax(1, keepdim=True).float(), x)[:, 0].astype(int)
    return feats, labels


class DomainFID:
    """Validation score of a model during training: domain FID of n samples against held-out images.

    The starting noise is drawn once, so successive evaluations differ by the model alone.
    """

    def __init__(self, val: ImageData, classifier: DomainClassifier, pixel_range: PixelRange, n: int, seed: int):
        self.classifier, self.pixel_range, self.n, self.seed = classifier, pixel_range, n, seed
        self.reference = FeatureStats.from_features(embed(classifier, val.x)[0])

    def __call__(self, model: nn.Module, sampler=None) -> float:
        """Domain FID of a tilted model sampled with `sampler`, or (no sampler) of a base model's own samples."""
        gen = torch.Generator(next(model.parameters()).device).manual_seed(self.seed)
        noise = model.sample_noise(self.n, gen)
        if sampler is not None:
            noise = model.sample(sampler, noise, gen).noise
        with torch.no_grad():
            x = model.output(noise) if sampler is not None else model.decode(noise)
        feats = embed(self.classifier, to_uint8(x, self.pixel_range).cpu())[0]
        return frechet_distance(FeatureStats.from_features(feats), self.reference)


def check_shape(samples: Tensor, data: ImageData, name: str) -> None:
    if tuple(samples.shape[1:]) != tuple(data.shape):
        raise UserError(f"the run's images have shape {tuple(samples.shape[1:])}, --data {name} has "
                        f"{tuple(data.shape)}: evaluate against the data set the run was trained on")


def evaluate_images(samples: Tensor, source: DataSource, metrics: list[Metric], quiet: bool = True,
                    floor: bool = True, device: str | torch.device = "cpu", exact: bool = False) -> dict:
    """Metrics of uint8 samples (N, C, H, W) against the test split, and (floor) of N training images; the
    Inception network runs on `device`, by its reference runtime if `exact` (else the fastest at hand).

    Returns {"model": {...}, "floor": {...}} with the keys of the metrics asked for, and (domain
    metrics) the domain classifier's accuracy on the test set.
    """
    test, train = source.images("test"), source.images("train")
    check_shape(samples, test, source.name)
    n = len(samples)
    if floor and n > len(train.x):
        raise UserError(f"--n {n}: the floor needs as many training images, and there are {len(train.x)}")
    sets = {"model": samples, **({"floor": train.x[:n]} if floor else {})}
    report: dict = {k: {} for k in sets}
    domain = [m for m in metrics if m in DOMAIN]
    if domain:
        clf = classifier_for(source, quiet)
        real_feats, real_labels = embed(clf, test.x)
        n_classes = int(test.y.max()) + 1
        report["classifier_test_accuracy"] = float((real_labels == test.y.numpy()).mean())
        for key, x in sets.items():
            feats, labels = embed(clf, x)
            values = domain_metrics(feats, real_feats, labels, real_labels, n_classes)
            report[key].update({k: values[k] for m in domain for k in DOMAIN_KEYS[m]})
    if Metric.INCEPTION_FID in metrics:
        inception = InceptionFeatures(device, runtime=InceptionRuntime.TORCH if exact else None)
        test_stats = inception_stats(inception, test, "test", len(test.x), quiet)
        for key, x in sets.items():
            stats = (inception_stats(inception, train, "train", n, quiet) if key == "floor"
                     else FeatureStats.from_features(extract_features(inception, x, INCEPTION_BATCH, quiet)))
            report[key]["inception_fid"] = frechet_distance(stats, test_stats)
    return report


def inception_stats(inception: InceptionFeatures, data: ImageData, split: str, n: int, quiet: bool) -> FeatureStats:
    """Inception statistics of the first n images of a real split, cached by the set's checksum and the runtime."""
    runtime = "" if inception.runtime is InceptionRuntime.TORCH else f"-{inception.runtime.value}"
    path = default_cache_dir() / "inception" / f"{data.checksum()}-{split}-{n}{runtime}.npz"
    if path.is_file():
        return FeatureStats.load(path)
    stats = FeatureStats.from_features(extract_features(inception, data.x[:n], INCEPTION_BATCH, quiet))
    path.parent.mkdir(parents=True, exist_ok=True)
    stats.save(path)
    return stats


# ---------------------------------------------------------------- FID between two image sets (`tiltkit fid`)

FID_METRICS = (Metric.FID, Metric.INCEPTION_FID)


def image_set(spec: str, data_dir: str | None = None, image_size: int | None = None) -> ImageData | FeatureStats:
    """The images `spec` names, or the Inception statistics it holds.

    spec: a data-set name (its test split; `NAME:train` for the training split), an image folder or a
    .npy/.npz array file (all its images, `PATH:test` for an .npz's x_test), or an .npz of FID statistics with
    keys mu and sigma as pytorch-fid and clean-fid write them.
    """
    name, sep, split = spec.rpartition(":")
    if not (sep and split in ("train", "test")):
        name, split = spec, ("test" if spec in IMAGE_SETS else "train")
    path = Path(name)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if {"mu", "sigma"} <= set(z.files):
                return FeatureStats(mu=z["mu"], sigma=z["sigma"], n=int(z["n"]) if "n" in z.files else 0)
    return load_images(name, split, data_dir, image_size)


def fid_between(a: str, b: str, metrics: list[Metric], domain: str | None = None, data_dir: str | None = None,
                image_size: int | None = None, quiet: bool = True, exact: bool = False) -> dict:
    """FID between image sets `a` and `b` (see `image_set`): domain FID in the features of `domain`'s classifier
    (default: whichever of a, b is a labelled data-set name), Inception FID on the standard weights (by the
    reference runtime if `exact`)."""
    bad = [m.value for m in metrics if m not in FID_METRICS]
    if bad:
        raise UserError(f"--metrics {','.join(bad)}: tiltkit fid computes fid (domain) and inception-fid")
    sets = {"a": image_set(a, data_dir, image_size), "b": image_set(b, data_dir, image_size)}
    images = {k: v for k, v in sets.items() if isinstance(v, ImageData)}
    if len(images) == 2 and tuple(images["a"].shape) != tuple(images["b"].shape):
        raise UserError(f"{a} has images of shape {tuple(images['a'].shape)}, {b} of {tuple(images['b'].shape)}")
    report: dict = {"a": a, "b": b, **{f"n_{k}": (len(v.x) if isinstance(v, ImageData) else v.n) for k, v in sets.items()}}
    if Metric.FID in metrics:
        if len(images) < 2:
            raise UserError("domain FID needs two image sets, not a statistics file (use --metrics inception-fid)")
        source = domain or next((s.rpartition(":")[0] or s for s in (a, b)
                                 if (s.rpartition(":")[0] or s) in IMAGE_SETS), None)
        if source is None:
            raise UserError("domain FID: name the labelled data set whose classifier gives the features (--domain)")
        clf = classifier_for(DataSource(source, data_dir, image_size), quiet)
        stats = [FeatureStats.from_features(embed(clf, images[k].x)[0]) for k in ("a", "b")]
        report["domain"], report["fid"] = source, frechet_distance(*stats)
    if Metric.INCEPTION_FID in metrics:
        inception = (InceptionFeatures(runtime=InceptionRuntime.TORCH if exact else None) if images else None)
        stats = [v if isinstance(v, FeatureStats)
                 else FeatureStats.from_features(extract_features(inception, v.x, INCEPTION_BATCH, quiet))
                 for v in sets.values()]
        report["inception_fid"] = frechet_distance(*stats)
    return report
