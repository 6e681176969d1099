"""DenoisingEBM: a σ-conditioned denoising autoencoder whose reconstruction error is an energy
(Denoising-EBM, Zeng 2023). Equations numbered as in the paper.

Images live in [−1, 1] (§5). With r_φ = g_β∘f_α the DAE and h_γ the semantic decoder (generators/dae.py):

    x̃ = x + σ·ε,  ε ~ N(0, I)                                     perturbed data, σ from a geometric ladder
    U_c(x, σ) = ‖x − r_φ(x̃, σ)‖² / (2σ²)                            (7)  texture energy, data space
    U_s(z, σ) = ‖h_γ(z) − r_φ(h_γ(z) + σ·ε, σ)‖² / (2σ²)             (8)  semantic energy, latent space
    L_DAE = ‖r_φ(x̃, σ) − x‖²,   L_Dec = ‖h_γ(f_α(x̃, σ)) − x‖²        (1), (13) reconstruction training

r_φ is the U-Net F wrapped in the preconditioning of Karras et al. 2022 (EDM, Table 1), with σ_data = 0.5:
r(x̃, σ) = c_skip·x̃ + c_out·F(c_in·x̃, c_noise), c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/√(σ² + σ_d²),
c_in = 1/√(σ² + σ_d²), c_noise = ¼·ln σ: every σ sees inputs and targets of unit scale.

Each energy draws its own ε (a fresh draw per evaluation, from the caller's generator) unless one is
passed in. Two-stage sampling (§4.2, Algorithm 1 lines 7–13): K Langevin steps on U_s from z⁰, x⁰ = h_γ(z_K)
(the "semantic image"), then T Langevin steps on U_c from x⁰. The paper starts z⁰ ~ N(0, I); here z⁰ comes
from `CodePrior`, a Gaussian fitted to the codes of training images (N(0, I) before training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .data.images import PixelRange
from .generators.dae import UNet
from .generators.nets import image_decoder
from .losses import contrastive_loss
from .outputs import LossOutput
from .samplers import AnnealedConfig, SampleResult, SamplerConfig, annealed_langevin
from .samplers import noise as nz

SIGMA_DATA = 0.5  # EDM's σ_data: the standard deviation of images in [−1, 1], roughly
OOD_SIGMA = 0.05  # §5.3: the OOD score is −U_c(x, 0.05)


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> Tensor:
    """(n,) noise levels σ_1 = sigma_max > … > σ_n = sigma_min, a geometric sequence (§5: 1 to 0.01, n = 128)."""
    if not (sigma_max > sigma_min > 0) or n < 2:
        raise ValueError(f"noise levels need sigma_max > sigma_min > 0 and n ≥ 2, got {sigma_max}, {sigma_min}, {n}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n)


class CodePrior(nn.Module):
    """A Gaussian N(μ, Σ) over the semantic codes of training images, where semantic chains start.

    The encoder standardizes each code (zero mean, unit variance across its d features), so codes lie on a
    sphere of radius √d in the subspace orthogonal to (1, …, 1), and within it where the data put them;
    chains started from N(0, I) start mostly where no image's code lies. μ and Σ are running moments of the
    codes f_α(x + σ_min·ε, σ_min) of training batches (`update`, each training iteration): a cumulative
    average over the first 1/RATE batches, then an exponential one of rate RATE. Buffers: saved and
    restored with the checkpoint. Before any update it is N(0, I).
    """

    RATE = 0.01

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("second", torch.eye(dim))  # E[z zᵀ]
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, z: Tensor) -> None:
        """Fold the codes z (B, d) into the moments."""
        rate = max(1.0 / (int(self.count) + 1), self.RATE)
        self.mean.lerp_(z.mean(0), rate)
        self.second.lerp_(z.T @ z / len(z), rate)
        self.count += 1

    def covariance(self) -> Tensor:
        return self.second - torch.outer(self.mean, self.mean)

    def cholesky(self) -> Tensor:
        """L with L Lᵀ = Σ + 1e-4·I (so that a rank-deficient Σ still factors); I before any update."""
        eye = torch.eye(len(self.mean), device=self.mean.device)
        return eye if int(self.count) == 0 else torch.linalg.cholesky(self.covariance() + 1e-4 * eye)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, d) draws of N(μ, Σ)."""
        eps = torch.randn(n, len(self.mean), generator=generator, device=self.mean.device)
        return eps if int(self.count) == 0 else self.mean + eps @ self.cholesky().T

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; μ, Σ) (B,) of codes z (B, d)."""
        chol = self.cholesky()
        mean = self.mean if int(self.count) else torch.zeros_like(self.mean)
        w = torch.linalg.solve_triangular(chol, (z - mean).T, upper=False).T
        d = len(self.mean)
        return -0.5 * w.pow(2).sum(1) - chol.diagonal().log().sum() - 0.5 * d * math.log(2 * math.pi)


@dataclass
class TwoStageSample:
    """x: the samples x_T (B, C, H, W); semantic: x⁰ = h(z_K); z: z_K (B, d); sigma: each chain's σ (B,);
    trajectory: images every `every` steps, h(z_t) through stage 1 then x_t through stage 2 (or None)."""

    x: Tensor
    semantic: Tensor
    z: Tensor
    sigma: Tensor
    trajectory: list[Tensor] | None = None
    nonfinite_rejections: int = 0


class DenoisingEBM(nn.Module):
    """The DAE r_φ = g_β∘f_α (a U-Net), the semantic decoder h_γ and the σ ladder, on images (C, H, W) in [−1, 1]."""

    image_model = True
    pixel_range = PixelRange.SYMMETRIC

    def __init__(self, data_shape: tuple[int, int, int], width: int = 32, latent_dim: int = 64,
                 decoder_width: int = 32, sigma_max: float = 1.0, sigma_min: float = 0.01, n_sigmas: int = 128):
        super().__init__()
        self.data_shape, self.latent_dim = tuple(data_shape), latent_dim
        self.dae = UNet(self.data_shape, width, latent_dim)
        self.decoder = image_decoder(self.data_shape, latent_dim, decoder_width, arch="resnet", norm="group")
        self.code_prior = CodePrior(latent_dim)
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, sigma_min, n_sigmas))

    # ------------------------------------------------------------ the networks, preconditioned

    def draw_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n,) levels drawn uniformly from the ladder, one per example (Algorithm 1, line 3)."""
        idx = torch.randint(len(self.sigmas), (n,), generator=generator, device=self.sigmas.device)
        return self.sigmas[idx]

    @staticmethod
    def _coefficients(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = sigma.view(-1, 1, 1, 1)
        root = (s ** 2 + SIGMA_DATA ** 2).sqrt()
        return SIGMA_DATA ** 2 / root ** 2, s * SIGMA_DATA / root, 1 / root, sigma.log() / 4

    def denoise(self, x_tilde: Tensor, sigma: Tensor) -> Tensor:
        """r_φ(x̃, σ): x̃ (B, C, H, W), σ (B,) -> the reconstruction (B, C, H, W)."""
        c_skip, c_out, c_in, c_noise = self._coefficients(sigma)
        return c_skip * x_tilde + c_out * self.dae(c_in * x_tilde, c_noise)

    def code(self, x_tilde: Tensor, sigma: Tensor) -> Tensor:
        """z = f_α(x̃, σ) (B, d): the semantic code of a perturbed image."""
        _, _, c_in, c_noise = self._coefficients(sigma)
        return self.dae.encode(c_in * x_tilde, c_noise)[0]

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z⁰ (n, d), where the semantic chains start: drawn from the code prior (N(0, I) before it has seen codes)."""
        return self.code_prior.sample(n, generator)

    @torch.no_grad()
    def clean_code(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """f_α(x + σ_min·ε, σ_min) (B, d): the code of images x (B, C, H, W) at the ladder's smallest σ."""
        sigma = self.sigmas[-1].expand(len(x))
        return self.code(x + sigma.view(-1, 1, 1, 1) * nz.randn(x.shape, generator, x), sigma)

    def code_log_density(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """log N(clean_code(x); μ, Σ) (B,): how typical the code of x is under the code prior."""
        return self.code_prior.log_prob(self.clean_code(x, generator))

    def observe_codes(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Fold the codes of training images x (B, C, H, W) (`clean_code`) into the code prior."""
        self.code_prior.update(self.clean_code(x, generator))

    def decode(self, z: Tensor) -> Tensor:
        """h_γ(z): the semantic image (B, C, H, W) of codes z (B, d)."""
        return self.decoder(z)

    # ------------------------------------------------------------ energies and losses

    def texture_energy(self, x: Tensor, sigma: Tensor, noise: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """U_c(x, σ) (B,), eq. (7): x (B, C, H, W), σ (B,); ε = `noise`, or drawn from `generator`."""
        eps = nz.randn(x.shape, generator, x) if noise is None else noise
        s = sigma.view(-1, 1, 1, 1)
        r = self.denoise(x + s * eps, sigma)
        return (x - r).flatten(1).pow(2).sum(1) / (2 * sigma ** 2)

    def semantic_energy(self, z: Tensor, sigma: Tensor, noise: Tensor | None = None,
                        generator: torch.Generator | None = None) -> Tensor:
        """U_s(z, σ) (B,), eq. (8): the texture energy of the semantic image h_γ(z)."""
        return self.texture_energy(self.decode(z), sigma, noise, generator)

    def reconstruction_loss(self, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
        """L_DAE + L_Dec, eqs. (1) and (13), per-example σ; means over the batch of per-image sums.

        The decoder loss reaches h_γ only: the code f_α(x̃, σ) is detached (Algorithm 1, line 4: Δγ = ∇γ L_Dec).
        """
        sigma = self.draw_sigmas(x.shape[0], generator)
        x_tilde = x + sigma.view(-1, 1, 1, 1) * nz.randn(x.shape, generator, x)
        c_skip, c_out, c_in, c_noise = self._coefficients(sigma)
        z, skips, emb = self.dae.encode(c_in * x_tilde, c_noise)
        r = c_skip * x_tilde + c_out * self.dae.decode(z, skips, emb)
        dae = (r - x).flatten(1).pow(2).sum(1).mean()
        dec = (self.decode(z.detach()) - x).flatten(1).pow(2).sum(1).mean()
        return LossOutput(dae + dec, {"dae_loss": dae.item(), "dec_loss": dec.item()})

    def contrastive_losses(self, x: Tensor, sigma: Tensor, z_neg: Tensor, x_neg: Tensor,
                           generator: torch.Generator | None = None, alpha: float = 0.0) -> tuple[Tensor, Tensor, dict]:
        """(semantic loss, texture loss, metrics): Algorithm 1, lines 14–17, as batch means of energies per
        pixel (u = U/D, D = C·H·W: the same direction as the paper's sums, at the scale of the reconstruction
        losses that share the optimizer), plus α·mean(u⁺² + u⁻²) where alpha > 0 (not in the paper; the
        tilting paper's B.2 regularizer, which bounds how far the negatives' energies can be pushed up):

            semantic = mean u_s(z_i, σ_i) − mean u_s(z_i^K, σ_i) [+ α·…],   z_i = f_α(x̃_i, σ_i) (detached)
            texture  = mean u_c(x_i, σ_i) − mean u_c(x_i^T, σ_i) [+ α·…]

        Their gradients go to γ and to φ respectively (`MixedPrecision.step` in precision.py). The metrics
        are the energies U themselves.
        """
        with torch.no_grad():
            z_pos = self.code(x + sigma.view(-1, 1, 1, 1) * nz.randn(x.shape, generator, x), sigma)
        us_pos, us_neg = self.semantic_energy(z_pos, sigma, generator=generator), \
            self.semantic_energy(z_neg.detach(), sigma, generator=generator)
        uc_pos, uc_neg = self.texture_energy(x, sigma, generator=generator), \
            self.texture_energy(x_neg.detach(), sigma, generator=generator)
        d = x[0].numel()
        semantic = contrastive_loss(us_pos / d, us_neg / d, alpha).loss
        texture = contrastive_loss(uc_pos / d, uc_neg / d, alpha, x_neg).loss
        metrics = {"us_pos": us_pos.mean().item(), "us_neg": us_neg.mean().item(),
                   "uc_pos": uc_pos.mean().item(), "uc_neg": uc_neg.mean().item(),
                   "semantic_gap": (us_neg.mean() - us_pos.mean()).item(),
                   "texture_gap": (uc_neg.mean() - uc_pos.mean()).item()}
        return semantic, texture, metrics

    # ------------------------------------------------------------ two-stage sampling

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """s(x, σ) = (r(x, σ) − x)/σ² (B, C, H, W): the score of the data blurred at σ (B,), by Tweedie (eq. 2)."""
        return (self.denoise(x, sigma) - x) / sigma.view(-1, 1, 1, 1) ** 2

    def texture_levels(self, annealed: AnnealedConfig) -> Tensor:
        """The annealed stage's levels: `annealed.levels` geometric from sigma_start to the ladder's smallest σ."""
        low = float(self.sigmas[-1])
        if not annealed.sigma_start > low:
            raise ValueError(f"sigma_start {annealed.sigma_start} must be above the smallest trained σ, {low:g}")
        return torch.logspace(math.log10(annealed.sigma_start), math.log10(low), annealed.levels,
                              device=self.sigmas.device) if annealed.levels > 1 else self.sigmas[-1:].clone()

    def refine(self, x0: Tensor, annealed: AnnealedConfig, generator: torch.Generator | None = None,
               return_trajectory: bool = False, every: int = 1) -> SampleResult:
        """The annealed texture stage from images x0 (B, C, H, W): annealed Langevin on the score s(x, σ) down
        `texture_levels(annealed)` from x0 + σ_start·n, n ~ N(0, I) (samplers/annealed.py)."""
        levels = self.texture_levels(annealed)
        start = x0 + levels[0] * nz.randn(x0.shape, generator, x0)
        return annealed_langevin(self.score, start, levels, annealed.steps, annealed.step_size, generator,
                                 annealed.final_denoise, annealed.clamp, return_trajectory, every)

    def sample(self, n: int, latent_sampler: SamplerConfig | None, pixel_sampler: SamplerConfig | AnnealedConfig,
               generator: torch.Generator | None = None, sigma: float | Tensor | None = None,
               z0: Tensor | None = None, return_trajectory: bool = False, every: int = 1) -> TwoStageSample:
        """Two-stage sampling (§4.2): `latent_sampler` on U_s(·, σ) from z⁰ (eq. 15; z⁰ from the code prior
        unless given; None: no semantic chain, z_K = z⁰), x⁰ = h_γ(z_K), then the texture stage from x⁰:
        - a SamplerConfig: the paper's chain on U_c(·, σ) (eq. 16);
        - an AnnealedConfig: `refine`, annealed Langevin on the score s(x, σ) from x⁰ + σ_start·n.

        sigma: the level of U_s and U_c, one for every chain, a tensor (n,) of levels, or None: each chain
        draws its own from the ladder (as the training chains do). Langevin here is tiltkit's
        ε − (η/2)∇U + √η·ω, so the paper's step η₁ of eq. 15 is step_size = 2η₁.
        """
        z0 = self.sample_noise(n, generator) if z0 is None else z0
        if sigma is None:
            sigma = self.draw_sigmas(n, generator)
        sigma = torch.as_tensor(sigma, dtype=z0.dtype, device=z0.device).expand(z0.shape[0])
        if latent_sampler is None:
            stage1 = SampleResult(z0, torch.zeros(len(z0), device=z0.device), trajectory=[z0] * return_trajectory)
        else:
            stage1 = latent_sampler.run(lambda z: self.semantic_energy(z, sigma, generator=generator), z0, generator,
                                        return_trajectory=return_trajectory, trajectory_every=every)
        with torch.no_grad():
            x0 = self.decode(stage1.noise)
        if isinstance(pixel_sampler, AnnealedConfig):
            stage2 = self.refine(x0, pixel_sampler, generator, return_trajectory, every)
        else:
            stage2 = pixel_sampler.run(lambda x: self.texture_energy(x, sigma, generator=generator), x0, generator,
                                       return_trajectory=return_trajectory, trajectory_every=every)
        frames = None
        if return_trajectory:
            with torch.no_grad():
                texture = stage2.trajectory if isinstance(pixel_sampler, AnnealedConfig) else stage2.trajectory[1:]
                frames = [self.decode(z) for z in stage1.trajectory] + texture  # the paper's starts at h(z_K)
        return TwoStageSample(stage2.noise, x0, stage1.noise, sigma, frames,
                              stage1.nonfinite_rejections + stage2.nonfinite_rejections)

    def ood_score(self, x: Tensor, sigma: float = OOD_SIGMA, generator: torch.Generator | None = None) -> Tensor:
        """−U_c(x, σ) (B,) at a fixed small σ (§5.3: σ = 0.05): higher = more in-distribution."""
        return -self.texture_energy(x, torch.full((x.shape[0],), sigma, device=x.device), generator=generator)
