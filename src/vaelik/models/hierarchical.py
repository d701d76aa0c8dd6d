"""Two stochastic layers: the hierarchical VAE of the VampPrior paper (Tomczak & Welling 2018).

    p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1, z2),   q(z1, z2|x) = q(z2|x) q(z1|x, z2).

Latents are one tensor ``z = [z2, z1]`` (top layer first), ``[..., L2 + L1]``, so estimators,
proposals and AIS treat the hierarchy like any other latent. p(z2) is any prior of
:mod:`vaelik.models.priors`; q(z2|x) is any guide (diagonal Gaussian, IAF); the conditionals
p(z1|z2) and q(z1|x, z2) are diagonal Gaussians from MLPs. The decoder reads the whole z.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vaelik.models.guides import (
    BaseLogProb,
    DiagonalGaussianPosterior,
    Guide,
    Posterior,
    check_latent_dim,
    check_scale_options,
    gaussian_log_prob,
    positive_scale,
)
from vaelik.models.networks import mlp
from vaelik.models.priors import Prior


class ConditionalGaussian(nn.Module):
    """N(mu(h), diag sigma(h)^2) over ``latent_dim`` from inputs ``h [..., in_features]``: an
    MLP ``in_features -> hidden... -> 2 * latent_dim`` (sigma as in the diagonal guide)."""

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        hidden: Sequence[int] = (300, 300),
        activation: str = "tanh",
        log_scale_bound: float | None = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        check_scale_options(log_scale_bound, min_scale)
        self.net = mlp([int(in_features), *hidden, 2 * self.latent_dim], activation)
        self.log_scale_bound, self.min_scale = log_scale_bound, min_scale

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """loc, scale, each ``[..., latent_dim]``."""
        loc, raw = self.net(h).chunk(2, dim=-1)
        return loc, positive_scale(raw, self.log_scale_bound, self.min_scale)


class TwoLayerPosterior(Posterior):
    """q(z2|x) q(z1|x, z2) for a batch: the top posterior, the lower layer's features of x
    ``[B, F]`` and the conditional network. Noise ``[K, B, top noise + L1]``."""

    def __init__(self, top: Posterior, features: torch.Tensor, lower: ConditionalGaussian):
        self.top, self.features, self.lower = top, features, lower
        self.loc, self.scale = top.loc, top.scale
        self.can_score = top.can_score
        self.noise_dims = top.noise_dims + lower.latent_dim

    def lower_gaussian(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """loc, scale of q(z1|x, z2) for ``z2 [..., B, L2]``."""
        features = self.features.expand(*z2.shape[:-1], self.features.shape[-1])
        return self.lower(torch.cat([features, z2], dim=-1))

    def complete(self, base, log_base, noise):
        top_rest = self.top.noise_dims - self.top.base_dims
        z2, log_q = self.top.complete(base, log_base, noise[..., :top_rest])
        loc, scale = self.lower_gaussian(z2)
        z1 = noise[..., top_rest:] * scale + loc
        return torch.cat([z2, z1], dim=-1), log_q + gaussian_log_prob(z1, loc, scale)

    def log_prob_with_base(self, z: torch.Tensor, base_log_prob: BaseLogProb) -> torch.Tensor:
        z2, z1 = z.split([z.shape[-1] - self.lower.latent_dim, self.lower.latent_dim], dim=-1)
        loc, scale = self.lower_gaussian(z2)
        return self.top.log_prob_with_base(z2, base_log_prob) + gaussian_log_prob(z1, loc, scale)

    def rows(self, rows: slice) -> TwoLayerPosterior:
        return TwoLayerPosterior(self.top.rows(rows), self.features[rows], self.lower)

    @property
    def mean(self) -> torch.Tensor:
        z2 = self.top.mean
        return torch.cat([z2, self.lower_gaussian(z2)[0]], dim=-1)


class TwoLayerGuide(Guide):
    """q(z2|x) from ``top`` (a guide over L2), q(z1|x, z2) from ``lower_encoder(x)`` features
    (``lower_features`` wide) joined with z2 and fed to ``lower`` (a :class:`ConditionalGaussian`
    over L1 with ``lower_features + L2`` inputs)."""

    name = "hierarchical"

    def __init__(self, top: Guide, lower_encoder: nn.Module, lower: ConditionalGaussian) -> None:
        super().__init__()
        self.top, self.lower_encoder, self.lower = top, lower_encoder, lower
        self.latent_dim = top.latent_dim + lower.latent_dim
        self.can_score = top.can_score
        self.gaussian_top = top.gaussian_top
        self.name = f"{top.name} (top layer of model=hvae)"

    def forward(self, x: torch.Tensor) -> TwoLayerPosterior:
        return TwoLayerPosterior(self.top(x), self.lower_encoder(x), self.lower)

    def top_gaussian(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        return self.top.top_gaussian(x)


class TwoLayerPrior(Prior):
    """p(z2) p(z1|z2): ``top`` is any prior over L2, ``conditional`` a
    :class:`ConditionalGaussian` from z2 to z1. Noise ``[..., top noise + L1]``."""

    def __init__(self, top: Prior, conditional: ConditionalGaussian) -> None:
        super().__init__()
        self.top, self.conditional = top, conditional
        self.latent_dim = top.latent_dim + conditional.latent_dim
        self.noise_dims = top.noise_dims + conditional.latent_dim

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z.split([self.top.latent_dim, self.conditional.latent_dim], dim=-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z2, z1 = self.split(z)
        loc, scale = self.conditional(z2)
        return self.top.log_prob(z2) + gaussian_log_prob(z1, loc, scale)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        z2 = self.top.sample(noise[..., : self.top.noise_dims])
        loc, scale = self.conditional(z2)
        return torch.cat([z2, noise[..., self.top.noise_dims :] * scale + loc], dim=-1)

    def bind(self, guide: Guide) -> None:
        self.top.bind(guide)
