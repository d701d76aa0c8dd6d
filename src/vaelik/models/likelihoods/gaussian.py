"""Independent Gaussian pixels, for continuous data."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, Independent, Normal

from vaelik.models.likelihoods.base import IMAGE_DIMS, LikelihoodHead


class GaussianHead(LikelihoodHead):
    """p(x|z) = prod_d N(x_d; mu_d, sigma_d^2) with mu and log sigma from the decoder (2 channels
    per data channel: all means first, then all log-scales). For continuous data only: on
    discrete pixels a density is not a probability, so its bits/dim are not comparable with
    those of a discrete head."""

    name = "gaussian"
    params_per_channel = 2
    accepts = ("continuous",)
    remedy = "choose a discrete likelihood for it"

    def __call__(self, params: torch.Tensor) -> Distribution:
        loc, log_scale = params.chunk(2, dim=-IMAGE_DIMS)
        return Independent(Normal(loc, log_scale.exp(), validate_args=False), IMAGE_DIMS)
