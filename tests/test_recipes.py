"""Every recipe in configs/ parses into its config classes and builds its networks on its data's shape,
and the tilted model it describes checks out (VAEBM's pixel noise, use_mu, a joint energy's latent size)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tiltkit.config import NO_BASE, BaseRunConfig, DebmRunConfig, TiltRunConfig, from_dict
from tiltkit.training.builders import build_base, build_debm, build_energy, pixel_box_config, tilted_model

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
SHAPES = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "svhn": (3, 32, 32)}


def sections(path: Path) -> tuple[dict | None, dict | None]:
    values = yaml.safe_load(path.read_text())
    if "debm" in values:
        return None, None  # test_debm_recipe_parses_and_builds
    if "base" in values or "tilt" in values:
        return values.get("base"), values.get("tilt")
    return (values, None) if "model" in values else (None, values)  # toy recipes: one section per file


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_parses_and_builds(path):
    base_values, tilt_values = sections(path)
    base_cfg = from_dict(BaseRunConfig, base_values, str(path)) if base_values is not None else None
    tilt_cfg = from_dict(TiltRunConfig, {"base": "RUN", **tilt_values}, str(path)) if tilt_values else None
    if tilt_cfg is not None and tilt_cfg.base == NO_BASE:
        base_cfg = pixel_box_config(tilt_cfg)
    if base_cfg is None or base_cfg.data not in SHAPES:
        return  # toy recipes take their data set on the command line
    shape = SHAPES[base_cfg.data]
    base = build_base(base_cfg, shape)
    if tilt_cfg is None:
        return
    energy = build_energy(tilt_cfg, shape)
    model = tilted_model(tilt_cfg, base, energy)
    noise = model.sample_noise(2, torch.Generator().manual_seed(0))
    assert model(noise).shape == (2,) and model.output(noise).shape == (2, *shape)


DEBM_CONFIGS = [p for p in CONFIGS if "debm" in yaml.safe_load(p.read_text())]


@pytest.mark.parametrize("path", DEBM_CONFIGS, ids=[p.stem for p in DEBM_CONFIGS])
def test_debm_recipe_parses_and_builds(path):
    """A `debm:` recipe parses, and its Denoising-EBM denoises and decodes at its data's shape."""
    cfg = from_dict(DebmRunConfig, yaml.safe_load(path.read_text())["debm"], str(path))
    shape = SHAPES.get(cfg.data, (3, cfg.image_size, cfg.image_size))
    model = build_debm(cfg, shape)
    x, sigma = torch.zeros(1, *shape), model.sigmas[:1]
    assert model.denoise(x, sigma).shape == (1, *shape)
    assert model.decode(model.sample_noise(1)).shape == (1, *shape)
