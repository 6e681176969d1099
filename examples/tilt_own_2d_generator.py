"""Tilt your own 2-D generator: a small VAE written in plain torch, trained briefly on 8 Gaussians on a
circle, then tilted with tiltkit's public API alone (as_base, fit_tilt, Run.sample, load).

    python examples/tilt_own_2d_generator.py --out runs/own-2d            # ~1 min on 2 CPU cores
    python examples/tilt_own_2d_generator.py --out runs/own-2d --reload   # later: load, sample, compare
    torchrun --nproc_per_node 2 examples/tilt_own_2d_generator.py --out runs/own-2d-ddp

Prints the MMD² of the generator's samples and of the tilted model's to held-out data. Beside the run it
keeps what a later process needs: the decoder's weights (decoder.pt) and the samples drawn (samples.pt).
The same decoder through the command line, with `make_generator` below as the factory:

    OWN_2D_DECODER=runs/own-2d/decoder.pt PYTHONPATH=examples tiltkit train tilt \\
        --base-module tilt_own_2d_generator:make_generator --data points.npy --out runs/own-2d-cli
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from torch import nn

import tiltkit


def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) points: 8 Gaussians (std 0.05) on the circle of radius 2."""
    k = torch.randint(8, (n,), generator=generator)
    centres = 2 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    return centres + 0.05 * torch.randn(n, 2, generator=generator)


def mlp(d_in: int, d_out: int, hidden: int = 128) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, d_out))


class VAE(nn.Module):
    """z ~ N(0, I_2), x ≈ decoder(z): the decoder is the generator we tilt."""

    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = mlp(2, 4), mlp(2, 2)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.encoder(x).chunk(2, 1)
        z = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        return ((self.decoder(z) - x).pow(2).sum(1) / (2 * 0.05 ** 2) + kl).mean()


def make_generator() -> nn.Module:
    """The factory for `--base-module`: the trained decoder, its weights read from $OWN_2D_DECODER."""
    decoder = mlp(2, 2)
    decoder.load_state_dict(torch.load(os.environ["OWN_2D_DECODER"], weights_only=True))
    decoder.noise_shape = (2,)
    return decoder


def mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """MMD² between two samples with a sum of RBF kernels (bandwidths 0.05 to 1)."""
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    k = sum(torch.exp(-d2 / (2 * h ** 2)) for h in (0.05, 0.2, 1.0))
    n = len(x)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--steps", type=int, default=300, help="energy training steps")
    p.add_argument("--samples", type=int, default=2000, help="samples compared with held-out data")
    p.add_argument("--batch-size", type=int, default=256, help="per process under torchrun")
    p.add_argument("--reload", action="store_true", help="load the run in --out and compare its samples")
    args = p.parse_args()
    out = Path(args.out)
    if args.reload:  # a fresh process: your generator's weights, then the run
        decoder = mlp(2, 2)
        decoder.load_state_dict(torch.load(out / "decoder.pt", weights_only=True))
        x = tiltkit.load(out, base=decoder).sample(args.samples, seed=0)
        print(f"reloaded in a new process: samples identical: {bool(torch.equal(x, torch.load(out / 'samples.pt')))}")
        return
    torch.manual_seed(0)
    data_gen = torch.Generator().manual_seed(0)
    x_train, x_test = eight_gaussians(20_000, data_gen), eight_gaussians(args.samples, data_gen)

    vae = VAE()  # 1. your own model, trained your own way
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    for _ in range(args.vae_steps):
        loss = vae.loss(x_train[torch.randint(len(x_train), (256,))])
        opt.zero_grad()
        loss.backward()
        opt.step()

    base = tiltkit.as_base(vae.decoder, noise_shape=(2,))  # 2. tilt it
    run = tiltkit.fit_tilt(base, x_train, out=out, steps=args.steps, seed=0, batch_size=args.batch_size)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    with torch.no_grad():
        before = mmd2(vae.decoder(torch.randn(args.samples, 2, generator=torch.Generator().manual_seed(1))), x_test)
    x = run.sample(args.samples, seed=0)  # 3. sample: the same seed gives the same samples
    torch.save(vae.decoder.state_dict(), out / "decoder.pt")
    torch.save(x, out / "samples.pt")
    print(f"MMD² to held-out data: generator {before:.5f}, tilted {mmd2(x, x_test):.5f} "
          f"(ratio {mmd2(x, x_test) / before:.3f})")


if __name__ == "__main__":
    main()
