"""Builders: the networks a run config names, with initial weights drawn from the run's seed alone."""

from __future__ import annotations

import torch
from torch import nn

from ..config import BaseRunConfig, DebmRunConfig, TiltRunConfig
from ..denoising import DenoisingEBM
from ..energies import ENERGIES
from ..errors import UserError
from ..generators import GENERATORS, BaseModel, Capability, require
from ..tilt import TiltedModel


def build(registry: dict, name: str, kwargs: dict, data_shape: tuple[int, ...], seed: int, what: str) -> nn.Module:
    """registry[name](shape, **kwargs), its initial weights drawn from `seed` alone.

    Vector models get their dimension D, image models their (C, H, W). nn layers initialize
    from the global RNG; a forked, seeded RNG keeps the run reproducible and leaves the
    caller's RNG state untouched.
    """
    if name not in registry:
        raise UserError(f"unknown {what} {name!r}: expected one of {', '.join(registry)}")
    images = len(data_shape) > 1
    if registry[name].image_model != images:
        fits = [k for k, cls in registry.items() if cls.image_model == images]
        raise UserError(f"{what} {name!r} takes {'points (N, D)' if images else 'images (N, C, H, W)'}, but the data "
                        f"are {f'images of shape {tuple(data_shape)}' if images else 'points'}: use {' or '.join(fits)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return registry[name](data_shape[0] if len(data_shape) == 1 else tuple(data_shape), **kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{what} {name!r} on data of shape {tuple(data_shape)}: {exc}") from None


def build_base(cfg: BaseRunConfig, data_shape: tuple[int, ...]) -> nn.Module:
    return build(GENERATORS, cfg.model, cfg.model_kwargs, data_shape, cfg.seed, "model")


def build_energy(cfg: TiltRunConfig, data_shape: tuple[int, ...]) -> nn.Module:
    return build(ENERGIES, cfg.energy, cfg.energy_kwargs, data_shape, cfg.seed, "energy")


def build_debm(cfg: DebmRunConfig, data_shape: tuple[int, ...]) -> DenoisingEBM:
    return build({"debm": DenoisingEBM}, "debm", cfg.model_kwargs, data_shape, cfg.seed, "Denoising-EBM")


def pixel_box_config(cfg: TiltRunConfig) -> BaseRunConfig:
    """The base config a pixel EBM (base: none) stands on: a flat PixelBox on the tilt's own data."""
    return BaseRunConfig(data=cfg.data, data_dir=cfg.data_dir, image_size=cfg.image_size, model="pixel-box",
                         model_kwargs={"pixel_range": cfg.pixel_range}, steps=1, seed=cfg.seed, device=cfg.device)


def tilted_model(cfg: TiltRunConfig, base: BaseModel, energy: nn.Module) -> TiltedModel:
    """The TiltedModel a tilt config describes: VAEBM's pixel noise and use_mu set, a joint energy checked."""
    if cfg.pixel_noise:
        require(base, Capability.PIXEL_NOISE, "pixel_noise: chains over (ε_z, ε_x) (a VAE with a Gaussian decoder, "
                "model_kwargs.likelihood: gaussian)")
        base.pixel_noise = True
    if cfg.use_mu:
        require(base, Capability.DECODE_MEAN, "use_mu (the decoder mean as the sample)")
    if getattr(energy, "joint", False):
        require(base, Capability.ENCODE, "a joint energy E(x, z)")
        if energy.latent_dim != base.latent_dim:
            raise UserError(f"energy_kwargs.latent_dim is {energy.latent_dim}, the base's latent has "
                            f"{base.latent_dim} dimensions")
    return TiltedModel(base, energy, use_mu=cfg.use_mu)
