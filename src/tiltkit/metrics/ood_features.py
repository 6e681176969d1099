"""The parts of the OOD scores that look past one likelihood (metrics/ood.py puts them together):

- `compressed_bits`: L(x), the bits a lossless compressor spends on an image. Input-complexity score
  (Serrà et al., ICLR 2020, "Input complexity and out-of-distribution detection with likelihood-based
  generative models"): S(x) = log p(x) + L(x)·ln 2 in nats, a likelihood corrected by how much any model
  could compress x, since simple images (flat backgrounds, constants) get high likelihood from every model.
- `denoising_errors`: log of the mean squared error of a noise-conditional denoiser at several σ, the
  statistics of multiscale score matching (Mahmood et al., ICLR 2021, "Multiscale Score Matching for
  Out-of-Distribution Detection"): ‖x − r(x + σε, σ)‖² = σ⁴‖s(x + σε, σ) + ε/σ‖² ties them to the score norms.
- `elbo_terms` and `likelihood_regret`: a VAE's ELBO as its two terms, how well x is redrawn and how typical
  its code is, and the ELBO its encoder leaves on the table for x (Xiao, Yan & Amit, NeurIPS 2020,
  "Likelihood Regret: An Out-of-Distribution Detection Score For Variational Auto-encoder"): an amortized
  encoder fits images like its training data, not others.
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

from ..generators.bounds import gaussian_kl, vae_elbo

REGRET_STEPS, REGRET_LR, REGRET_DRAWS = 30, 0.05, 8  # Adam on q's parameters per image; draws of each ELBO
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


def elbo_terms(vae, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, 2): (−log p(x | z), KL(q(z | x) ‖ N(0, I))) of a VAE (posterior, log_p_x), one z ~ q(z | x) from
    `generator`; ELBO = −rec − kl."""
    return torch.stack(vae_elbo(vae, x, generator)[1:], 1)


def likelihood_regret(vae, x: Tensor, generator: torch.Generator | None = None, steps: int = REGRET_STEPS,
                      lr: float = REGRET_LR, draws: int = REGRET_DRAWS) -> Tensor:
    """Likelihood regret of a VAE, (B,) nats (Xiao, Yan & Amit 2020):

        R(x) = max_q ELBO(x; q) − ELBO(x; q_φ(· | x)),

    the ELBO gained by fitting q = N(m, diag eᵛ) to x alone instead of taking the encoder's. (m, v) start at the
    encoder's output and take `steps` Adam steps at `lr` on a one-draw ELBO; the paper refits the encoder's
    weights per image, and fitting q's parameters directly is the same search over a family that contains
    every encoder output. Both ELBOs average the same `draws` draws of z (common random numbers), so their
    difference carries little sampling noise. All draws come from `generator`; the VAE's weights get no grad.
    """
    mean0, log_var0 = (t.detach() for t in vae.posterior(x))
    shared = torch.randn((draws, *mean0.shape), generator=generator, device=mean0.device, dtype=mean0.dtype)

    def mean_elbo(m: Tensor, v: Tensor) -> Tensor:
        log_p = torch.stack([vae.log_p_x(x, m + (0.5 * v).exp() * e) for e in shared]).mean(0)
        return log_p - gaussian_kl(m, v)

    m, v = mean0.clone().requires_grad_(True), log_var0.clone().requires_grad_(True)
    opt = torch.optim.Adam([m, v], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            e = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
            loss = -(vae.log_p_x(x, m + (0.5 * v).exp() * e) - gaussian_kl(m, v)).sum()
            m.grad, v.grad = torch.autograd.grad(loss, [m, v])
            opt.step()
    with torch.no_grad():
        return mean_elbo(m, v) - mean_elbo(mean0, log_var0)


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
        self.n = len(f)  # training images fitted on
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
