"""The VAE as a plain nn.Module composing encoder, posterior, prior, decoder and likelihood head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence


@dataclass
class ElboTerms:
    """Per-example ELBO pieces, each ``[B]``: elbo = log_px_z - kl."""

    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor


class VAE(nn.Module):
    """p(x, z) = p(z) p(x|z) with an amortised posterior q(z|x).

    Args:
        encoder: images ``[B, C, H, W]`` (scaled by ``input_scale``) -> features ``[B, 2L]``.
        posterior: features -> q(z|x), batch ``[B]``, event ``[L]``.
        prior: ``() -> p(z)``, event ``[L]``.
        decoder: latents ``[N, L]`` -> likelihood parameters ``[N, P, H, W]``.
        likelihood: parameters -> p(x|z), event ``[C, H, W]``.
        input_scale: multiplies x before the encoder (1/255 for 8-bit data, 1 for binary).
    """

    def __init__(
        self,
        encoder: nn.Module,
        posterior: nn.Module,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.posterior = posterior
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.input_scale = input_scale

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for a batch ``x [B, C, H, W]``: batch ``[B]``, event ``[L]``."""
        return self.posterior(self.encoder(x * self.input_scale))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents ``z [..., L]``: batch ``[...]``, event ``[C, H, W]``."""
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood(params.reshape(*z.shape[:-1], *params.shape[1:]))

    def log_joint_terms(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) for ``x [B, C, H, W]`` and ``z [K, B, L]``, shape ``[K, B]``."""
        return self.decode(z).log_prob(x) + self.prior().log_prob(z)

    def elbo(
        self, x: torch.Tensor, analytic_kl: bool = True, z: torch.Tensor | None = None
    ) -> ElboTerms:
        """One-sample reparameterised ELBO per example, at ``z [B, L]`` if given (else drawn).

        With ``analytic_kl`` the KL(q||p) term is exact; otherwise it is the single-sample
        estimate log q(z|x) - log p(z) on the same z, so that elbo = log w for that draw.
        """
        q = self.encode(x)
        z = q.rsample() if z is None else z
        log_px_z = self.decode(z).log_prob(x)
        if analytic_kl:
            kl = kl_divergence(q, self.prior().expand(q.batch_shape))
        else:
            kl = q.log_prob(z) - self.prior().log_prob(z)
        return ElboTerms(elbo=log_px_z - kl, log_px_z=log_px_z, kl=kl)

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """Means of p(x|z) for ``num`` draws z ~ p(z): ``[num, C, H, W]``."""
        z = self.prior().sample((num,))
        return self.decode(z).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at the posterior mean z = E_q[z]: ``[B, C, H, W]``."""
        return self.decode(self.encode(x).mean).mean
