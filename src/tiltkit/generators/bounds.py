"""Likelihood bounds shared by the VAEs: the ELBO and the importance-weighted bound.

Both take the encoder's q(z | x) = N(mean, diag exp(log_var)) and a function
log_p_x(z) -> log p(x | z), (B,), so each VAE supplies only its own reconstruction term.

    ELBO(x) = E_q[log p(x | z)] − KL(q ‖ N(0, I)),                  (Kingma & Welling 2014, eq. 10)
    KL      = ½ Σ_j (m_j² + s_j² − 1 − log s_j²)                    (closed form, their appendix B)
    IWAE_K  = log (1/K) Σ_k p(x | z_k) p(z_k) / q(z_k | x),  z_k ~ q  (Burda et al. 2016, eq. 8)
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

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
