"""Distributions over the latent z: the standard-normal prior, the diagonal-Gaussian posterior."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal


class StandardNormal(nn.Module):
    """The prior p(z) = N(0, I_L), as a distribution with event shape ``[L]``."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)


class DiagonalGaussian(nn.Module):
    """The posterior family q(z|x) = N(mu(x), diag sigma(x)^2) from encoder outputs ``[..., 2L]``.

    The first L outputs are mu; the last L give sigma, either ``softplus(h) + min_scale`` or, with
    ``log_scale_bound = b`` (the seed uses b = 5), ``exp(b * tanh(h))``, which keeps
    log sigma in [-b, b] so that early training cannot produce infinite weights.
    """

    def __init__(
        self, latent_dim: int, log_scale_bound: float | None = None, min_scale: float = 1e-4
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if log_scale_bound is not None and log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be > 0 or null, got {log_scale_bound}")
        if min_scale < 0:
            raise ValueError(f"min_scale must be >= 0, got {min_scale}")
        self.latent_dim = latent_dim
        self.log_scale_bound = log_scale_bound
        self.min_scale = min_scale

    @property
    def num_params(self) -> int:
        """Encoder outputs this family needs: 2L."""
        return 2 * self.latent_dim

    def forward(self, params: torch.Tensor) -> Distribution:
        if params.shape[-1] != self.num_params:
            raise ValueError(
                f"the encoder gives {params.shape[-1]} outputs, the posterior needs "
                f"2 * latent_dim = {self.num_params}: set encoder.out_features to 2 * latent_dim"
            )
        loc, raw_scale = params.chunk(2, dim=-1)
        if self.log_scale_bound is None:
            scale = F.softplus(raw_scale) + self.min_scale
        else:
            scale = torch.exp(self.log_scale_bound * torch.tanh(raw_scale))
        return Independent(Normal(loc, scale, validate_args=False), 1)


def slice_batch(dist: Distribution, rows: slice) -> Distribution:
    """The same distribution restricted to batch rows ``rows`` (``Independent`` of a distribution
    whose parameters are listed in ``arg_constraints``, such as Normal)."""
    if isinstance(dist, Independent):
        return Independent(slice_batch(dist.base_dist, rows), dist.reinterpreted_batch_ndims)
    params = {name: getattr(dist, name)[rows] for name in dist.arg_constraints}
    return type(dist)(**params, validate_args=False)
