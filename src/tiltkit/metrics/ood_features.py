"""The parts of the OOD scores that look past one likelihood (metrics/ood.py puts them together):

- `compressed_bits`: L(x), the bits a lossless compressor spends on an image. Input-complexity score
  (Serrà et al., ICLR 2020, "Input complexity and out-of-distribution detection with likelihood-based
  generative models"): S(x) = log p(x) + L(x)·ln 2 in nats, a likelihood corrected by how much any model
  could compress x, since simple images (flat backgrounds, constants) get high likelihood from every model.
- `denoising_errors`: log of the mean squared error of a noise-conditional denoiser at several σ, the
  statistics of multiscale score matching (Mahmood et al., ICLR 2021, "Multiscale Score Matching for
  Out-of-Distribution Detection"): ‖x − r(x + σε, σ)‖² = σ⁴‖s(x + σε, σ) + ε/σ‖² ties them to the score norms.
- `FeatureDensity`: per-image statistics standardized and modelled by a Gaussian mixture (scikit-learn)
  fitted on in-distribution *training* images only, its number of components picked by BIC on those same
  images; the score is the mixture's log-density. The rows are put in a canonical order before fitting, so
  the fit does not depend on the order of the training images.
"""

from __future__ import annotations

import enum
import io
import math
import zlib

import numpy as np
import torch
from torch import Tensor

MULTISCALE_LEVELS = 10  # σ levels of the denoising errors, geometric over the trained ladder
COMPONENTS = (1, 2, 4, 8)  # mixture sizes BIC chooses from
FIT_N = 5000  # in-distribution training images a density is fitted on (all of them when fewer)


class Compressor(str, enum.Enum):
    PNG = "png"  # PIL, compression level 9 (zlib behind PNG's row filters)
    ZLIB = "zlib"  # zlib level 9 on the raw bytes, (C, H, W) order


def compressed_bits(x: Tensor, compressor: Compressor = Compressor.PNG) -> np.ndarray:
    """L(x): bits of each uint8 image (N, C, H, W) under `compressor`, float64 (N,)."""
    from PIL import Image

    if x.dtype != torch.uint8:
        raise ValueError(f"compressed_bits takes uint8 images, got {x.dtype}")
    out = np.empty(len(x))
    for i, img in enumerate(x.cpu().numpy()):
        if Compressor(compressor) is Compressor.ZLIB:
            size = len(zlib.compress(img.tobytes(), 9))
        else:
            buf = io.BytesIO()
            Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, "PNG", compress_level=9)
            size = buf.tell()
        out[i] = 8 * size
    return out


def multiscale_sigmas(ladder: Tensor, levels: int = MULTISCALE_LEVELS) -> Tensor:
    """`levels` σ geometric from the ladder's largest to its smallest."""
    return torch.logspace(math.log10(float(ladder.max())), math.log10(float(ladder.min())), levels,
                          device=ladder.device)


@torch.no_grad()
def denoising_errors(model, x: Tensor, sigmas: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """log mean_pixels (x − r(x + σε, σ))² for each σ of `sigmas` (L,): (B, L), x (B, C, H, W) in the model's
    range; one ε per image and level, from `generator`."""
    out = []
    for sigma in sigmas:
        s = sigma.expand(len(x))
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        r = model.denoise(x + sigma * eps, s)
        out.append((x - r).flatten(1).pow(2).mean(1).clamp_min(1e-12).log())
    return torch.stack(out, 1)


class FeatureDensity:
    """A Gaussian mixture on standardized features (N, F), fitted on in-distribution training images."""

    def __init__(self, features: np.ndarray, seed: int = 0, components: tuple[int, ...] = COMPONENTS):
        from sklearn.mixture import GaussianMixture

        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) < 2 * max(components):
            raise ValueError(f"a feature density needs (N, F) features with N ≥ {2 * max(components)}, "
                             f"got shape {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError("features of the training images are NaN or infinite")
        f = f[np.lexsort(f.T[::-1])]  # a canonical order: neither moments nor fit depend on the images' order
        self.mean, self.std = f.mean(0), f.std(0) + 1e-8
        z = self._standardize(f)
        fits = [GaussianMixture(k, covariance_type="full", reg_covar=1e-4, n_init=2, random_state=seed).fit(z)
                for k in components]
        bics = [m.bic(z) for m in fits]
        self.mixture = fits[int(np.argmin(bics))]
        self.components = self.mixture.n_components

    def _standardize(self, f: np.ndarray) -> np.ndarray:
        return (np.asarray(f, dtype=np.float64) - self.mean) / self.std

    def log_density(self, features: np.ndarray) -> np.ndarray:
        """Log-density (N,) of features (N, F) under the mixture, in standardized units."""
        return self.mixture.score_samples(self._standardize(features))
