"""ModuleBase: a researcher's own PyTorch generator as a tiltkit base (`tiltkit.as_base`).

Any nn.Module g mapping noise ε (B, *noise_shape) to samples x (B, *data_shape) is a reparameterized
base x = T(ε) = g(ε), ε ~ N(0, I), so the tilted density in noise space is the one every tiltkit
sampler runs on (tilting paper eq. 8):

    U(ε) = ½‖ε‖² + E_ψ(g(ε)).

What else the model can do is passed in and declared as a capability (generators/base.py):
`log_likelihood(x) -> (B,)`, an exact log-density (a flow: OOD `elbo`/`tilted` scores, chains in data
space); `encode(x) -> z (B, *noise_shape)`, a draw from an encoder q(z | x) (joint energies); and
`decode_mean(ε) -> x`, a decoder mean (use_mu). Images declare the range their pixels live in.

The generator is put in eval mode and never trained here; its weights are saved with every
checkpoint of a tilt, so a later `tiltkit.load` can check it is given the same model.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..data.images import PixelRange
from ..samplers import noise as nz
from ..samplers.noise import Noise
from .base import Capability

PROBE = 16  # noise draws decoded once, to learn the data shape and refuse a generator that is not finite


def check_noise_shape(noise_shape) -> tuple[int, ...]:
    """`noise_shape` as a tuple of positive ints, or ValueError."""
    if isinstance(noise_shape, int) and not isinstance(noise_shape, bool):
        noise_shape = (noise_shape,)
    ok = isinstance(noise_shape, (tuple, list)) and len(noise_shape) > 0 and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in noise_shape)
    if not ok:
        raise ValueError(f"noise_shape must be a tuple of positive ints, e.g. (2,) or (100,), got {noise_shape!r}")
    return tuple(noise_shape)


class ModuleBase(nn.Module):
    """x = generator(ε), ε ~ N(0, I) of shape `noise_shape`; optional capabilities as given."""

    def __init__(self, generator: nn.Module, noise_shape, *, log_likelihood: Callable[[Tensor], Tensor] | None = None,
                 encode: Callable[[Tensor], Tensor] | None = None,
                 decode_mean: Callable[[Noise], Tensor] | None = None, pixel_range: str | None = None):
        super().__init__()
        if not isinstance(generator, nn.Module):
            raise ValueError(f"the generator must be a torch.nn.Module mapping noise to samples, "
                             f"got {type(generator).__name__}")
        for name, fn in (("log_likelihood", log_likelihood), ("encode", encode), ("decode_mean", decode_mean)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
        self.generator = generator.eval()
        self.noise_shape = check_noise_shape(noise_shape)
        self.likelihood_fn, self.encode_fn, self.decode_mean_fn = log_likelihood, encode, decode_mean
        self.capabilities = frozenset(
            cap for cap, fn in ((Capability.LIKELIHOOD, log_likelihood), (Capability.EXACT_DENSITY, log_likelihood),
                                (Capability.ENCODE, encode), (Capability.DECODE_MEAN, decode_mean)) if fn is not None)
        ref = next(generator.parameters(), None)
        self.register_buffer("_ref", torch.zeros((), device=ref.device if ref is not None else None),
                             persistent=False)  # device and dtype of the noise
        self.data_shape = self._probe()
        images = len(self.data_shape) == 3
        if images and pixel_range is None:
            raise ValueError(f"the generator makes images of shape {self.data_shape}: pass pixel_range='unit' "
                             f"(pixels in [0, 1]) or 'symmetric' ([-1, 1])")
        if not images and pixel_range is not None:
            raise ValueError(f"pixel_range is for images (C, H, W); the generator makes samples of shape "
                             f"{self.data_shape}")
        try:
            self.pixel_range = PixelRange(pixel_range) if images else None
        except ValueError:
            raise ValueError(f"pixel_range must be 'unit' or 'symmetric', got {pixel_range!r}") from None

    @torch.no_grad()
    def _probe(self) -> tuple[int, ...]:
        """The shape of one sample, from PROBE fixed draws; ValueError for a wrong output or non-finite values."""
        gen = torch.Generator(self._ref.device).manual_seed(0)
        try:
            x = self.decode(self.sample_noise(PROBE, gen))
        except Exception as exc:  # the user's module, called on the noise shape it was declared with
            raise ValueError(f"the generator fails on noise of shape (B, {', '.join(map(str, self.noise_shape))}): "
                             f"{type(exc).__name__}: {exc}") from None
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != PROBE:
            raise ValueError(f"the generator must return a tensor (B, *data_shape) for noise (B, *noise_shape); "
                             f"for B = {PROBE} it returned {getattr(x, 'shape', type(x).__name__)}")
        if not x.is_floating_point():
            raise ValueError(f"the generator must return floating-point samples, got {x.dtype}")
        bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
        if bad:
            raise ValueError(f"the generator returns non-finite values (NaN or inf) for {bad} of {PROBE} noise draws")
        return tuple(x.shape[1:])

    # -- the BaseModel protocol -------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Noise:
        return nz.randn((n, *self.noise_shape), generator, self._ref)

    def decode(self, noise: Noise) -> Tensor:
        return self.generator(noise)

    def noise_energy(self, noise: Noise) -> Tensor:
        return 0.5 * nz.sq_norm(noise)

    # -- declared capabilities -----------------------------------------------------------
    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.likelihood_fn(x)

    def log_density(self, x: Tensor) -> Tensor:
        return self.likelihood_fn(x)

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.encode_fn(x)

    def latent(self, noise: Noise) -> Tensor:
        return noise

    @property
    def latent_dim(self) -> int:
        return self.noise_shape[0]

    def decode_mean(self, noise: Noise) -> Tensor:
        return self.decode_mean_fn(noise)
