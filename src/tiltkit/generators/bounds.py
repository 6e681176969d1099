"""Likelihood bounds shared by the VAEs: the ELBO and the importance-weighted bound.

Both take the encoder's q(z | x) = N(mean, diag exp(log_var)) and a function
log_p_x(z) -> log p(x | z), (B,), so each VAE supplies only its own reconstruction term; `vae_elbo`,
`vae_log_likelihood` and `elbo_loss` take them from a VAE's `posterior(x)` and `log_p_x(x, z)`.

    ELBO(x) = E_q[log p(x | z)] − KL(q ‖ N(0, I)),                  (Kingma & Welling 2014, eq. 10)
    KL      = ½ Σ_j (m_j² + s_j² − 1 − log s_j²)                    (closed form, their appendix B)
    IWAE_K  = log (1/K) Σ_k p(x | z_k) p(z_k) / q(z_k | x),  z_k ~ q  (Burda et al. 2016, eq. 8)
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..outputs import LossOutput
from ..samplers import noise as nz

LOG_2PI = math.log(2 * math.pi)
LogLikelihood = Callable[[Tensor], Tensor]


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, diag exp(log_var)) ‖ N(0, I)) per row, (B,)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)


def elbo(mean: Tensor, log_var: Tensor, log_p_x: LogLikelihood,
         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(ELBO, reconstruction −log p(x | z), KL), each (B,), one reparameterized z per row."""
    z = mean + (0.5 * log_var).exp() * nz.randn(mean.shape, generator, mean)
    rec, kl = -log_p_x(z), gaussian_kl(mean, log_var)
    return -rec - kl, rec, kl


def importance_weighted_bound(mean: Tensor, log_var: Tensor, log_p_x: LogLikelihood, n: int,
                              generator: torch.Generator | None = None) -> Tensor:
    """The n-sample importance-weighted bound, (B,); n = 1 gives a one-sample ELBO estimate."""
    std = (0.5 * log_var).exp()
    log_w = []
    for _ in range(n):
        eps = nz.randn(mean.shape, generator, mean)
        z = mean + std * eps
        log_p_z = -0.5 * (z.pow(2) + LOG_2PI).sum(1)
        log_q_z = -0.5 * (eps.pow(2) + log_var + LOG_2PI).sum(1)
        log_w.append(log_p_x(z) + log_p_z - log_q_z)
    return torch.logsumexp(torch.stack(log_w), 0) - math.log(n)


def vae_elbo(vae, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(ELBO, −log p(x | z), KL) of a VAE (posterior, log_p_x), each (B,), one z ~ q(z | x)."""
    return elbo(*vae.posterior(x), lambda z: vae.log_p_x(x, z), generator)


def vae_log_likelihood(vae, x: Tensor, generator: torch.Generator | None = None, n_importance: int = 1) -> Tensor:
    """The ELBO (n_importance = 1) or the importance-weighted bound with that many samples, (B,)."""
    if n_importance == 1:
        return vae_elbo(vae, x, generator)[0]
    return importance_weighted_bound(*vae.posterior(x), lambda z: vae.log_p_x(x, z), n_importance, generator)


def elbo_loss(vae, x: Tensor, generator: torch.Generator | None = None) -> LossOutput:
    """−mean ELBO, logged with its two terms."""
    bound, rec, kl = vae_elbo(vae, x, generator)
    loss = -bound.mean()
    return LossOutput(loss, {"loss": loss.item(), "rec": rec.mean().item(), "kl": kl.mean().item()})
