"""Stochastic layers stacked: the hierarchical VAE of the VampPrior paper (Tomczak & Welling
2018), with L >= 2 layers.

    p(x, z_1..z_L) = p(z_L) prod_{l<L} p(z_l|z_{l+1}) p(x|z_1, ..., z_L),
    q(z_1..z_L|x) = q(z_L|x) prod_{l<L} q(z_l|x, z_{l+1})

(bottom-up inference, top-down generation). Latents are one tensor ``z = [z_L, ..., z_1]``
(top layer first), so estimators, proposals and AIS treat the hierarchy like any other latent.
p(z_L) is any prior of :mod:`vaelik.models.priors`; q(z_L|x) is any guide (diagonal Gaussian,
IAF); the conditionals are diagonal Gaussians from MLPs. The decoder reads the whole z.

A hierarchy is built one layer at a time: a :class:`TwoLayerGuide` puts a layer q(z_l|x,
z_{l+1}) under a guide over ``[z_L, ..., z_{l+1}]`` (itself one layer or a stack), reading only
that guide's bottom layer z_{l+1}; :class:`TwoLayerPrior` does the same for p(z_l|z_{l+1}).
:class:`HierarchicalVAE` stacks ``num_layers`` of them from one template of each layer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from vaelik.errors import ConfigError
from vaelik.models.guides import (
    BaseLogProb,
    DiagonalGaussianPosterior,
    Guide,
    Posterior,
    ScaleRule,
    check_latent_dim,
    gaussian_log_prob,
)
from vaelik.models.networks import branch_and_join
from vaelik.models.priors import Prior
from vaelik.models.vae import VAE


class ConditionalGaussian(nn.Module):
    """N(mu(h), diag sigma(h)^2) over ``latent_dim`` from inputs ``h [..., in_features]``: an
    MLP ``in_features -> hidden... -> 2 * latent_dim``, sigma by the :class:`ScaleRule` of
    ``log_scale_bound``, ``min_scale``, ``log_var_bounds``. With ``branches`` (the widths of
    the last inputs, e.g. ``[L]`` for the layer above), those inputs first pass through their
    own layer of ``branch_width`` and the MLP reads them joined with the rest
    (:class:`~vaelik.models.networks.Branches`)."""

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        hidden: Sequence[int] = (300, 300),
        activation: str = "tanh",
        log_scale_bound: float | None = None,
        min_scale: float = 1e-4,
        log_var_bounds: Sequence[float] | None = None,
        branches: int | Sequence[int] | None = None,
        branch_width: int = 300,
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.scale_rule = ScaleRule(log_scale_bound, min_scale, log_var_bounds)
        self.net = branch_and_join(
            int(in_features), 2 * self.latent_dim, hidden, activation, branches, branch_width
        )

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """loc, scale, each ``[..., latent_dim]``."""
        loc, raw = self.net(h).chunk(2, dim=-1)
        return loc, self.scale_rule(raw)


class TwoLayerPosterior(Posterior):
    """q(z_top|x) q(z1|x, z2) for a batch: the top posterior (over z2, or over a stack
    ``[..., z2]`` whose bottom layer z2 is ``bottom_dims`` wide), the lower layer's features of
    x ``[B, F]`` and the conditional network. Noise ``[K, B, top noise + L1]``."""

    def __init__(
        self,
        top: Posterior,
        features: torch.Tensor,
        lower: ConditionalGaussian,
        bottom_dims: int | None = None,
    ):
        self.top, self.features, self.lower = top, features, lower
        self.bottom_dims = bottom_dims
        self.loc, self.scale = top.loc, top.scale
        self.can_score = top.can_score
        self.noise_dims = top.noise_dims + lower.latent_dim

    def lower_gaussian(self, z_top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """loc, scale of q(z1|x, z2) for the layers above, ``z_top [..., B, L_top]``, of which
        it reads the bottom one, z2 (all of ``z_top`` in a two-layer model)."""
        z2 = bottom_layer(z_top, self.bottom_dims)
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
        return TwoLayerPosterior(
            self.top.rows(rows), self.features[rows], self.lower, self.bottom_dims
        )

    @property
    def mean(self) -> torch.Tensor:
        z2 = self.top.mean
        return torch.cat([z2, self.lower_gaussian(z2)[0]], dim=-1)


def bottom_layer(z_top: torch.Tensor, width: int | None) -> torch.Tensor:
    """The bottom layer of the layers above, ``z_top [..., L_top]``: its last ``width``
    dimensions, or all of it where ``width`` is None (a single top layer)."""
    return z_top if width is None else z_top[..., -width:]


def bottom_width(top: nn.Module) -> int | None:
    """Width of the bottom layer of a stacked guide or prior; None for a single layer."""
    return top.bottom_dim if isinstance(top, TwoLayerGuide | TwoLayerPrior) else None


class TwoLayerGuide(Guide):
    """q(z2|x) from ``top`` (a guide over L2, or a stacked guide whose bottom layer is z2),
    q(z1|x, z2) from ``lower_encoder(x)`` features (F wide) joined with z2 and fed to ``lower``
    (a :class:`ConditionalGaussian` over L1 with F + L2 inputs)."""

    name = "hierarchical"

    def __init__(self, top: Guide, lower_encoder: nn.Module, lower: ConditionalGaussian) -> None:
        super().__init__()
        self.top, self.lower_encoder, self.lower = top, lower_encoder, lower
        self.latent_dim = top.latent_dim + lower.latent_dim
        self.can_score = top.can_score
        self.gaussian_top = top.gaussian_top
        self.name = (
            top.name if isinstance(top, TwoLayerGuide) else f"{top.name} (top layer of model=hvae)"
        )

    @property
    def bottom_dim(self) -> int:
        """Width of the lowest layer this guide draws (z1)."""
        return self.lower.latent_dim

    def forward(self, x: torch.Tensor) -> TwoLayerPosterior:
        return TwoLayerPosterior(
            self.top(x), self.lower_encoder(x), self.lower, bottom_width(self.top)
        )

    def top_gaussian(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        return self.top.top_gaussian(x)


class TwoLayerPrior(Prior):
    """p(z_top) p(z1|z2): ``top`` is any prior over L2 (or a stacked prior whose bottom layer
    is z2), ``conditional`` a :class:`ConditionalGaussian` from z2 to z1. Noise
    ``[..., top noise + L1]``."""

    def __init__(self, top: Prior, conditional: ConditionalGaussian) -> None:
        super().__init__()
        self.top, self.conditional = top, conditional
        self.latent_dim = top.latent_dim + conditional.latent_dim
        self.noise_dims = top.noise_dims + conditional.latent_dim

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z.split([self.top.latent_dim, self.conditional.latent_dim], dim=-1)

    @property
    def bottom_dim(self) -> int:
        """Width of the lowest layer this prior draws (z1)."""
        return self.conditional.latent_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z_top, z1 = self.split(z)
        loc, scale = self.conditional(bottom_layer(z_top, bottom_width(self.top)))
        return self.top.log_prob(z_top) + gaussian_log_prob(z1, loc, scale)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        z_top = self.top.sample(noise[..., : self.top.noise_dims])
        loc, scale = self.conditional(bottom_layer(z_top, bottom_width(self.top)))
        return torch.cat([z_top, noise[..., self.top.noise_dims :] * scale + loc], dim=-1)

    def bind(self, guide: Guide) -> None:
        self.top.bind(guide)


def fresh_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every layer's parameters drawn afresh (``reset_parameters``);
    a ConfigError where a layer holding parameters cannot redraw them."""
    twin = copy.deepcopy(module)
    for layer in twin.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        elif any(True for _ in layer.parameters(recurse=False)):
            raise ConfigError(
                f"model.num_layers > 2 copies the layers below the top, but "
                f"{type(layer).__name__} has parameters and no reset_parameters() to draw a "
                "copy's afresh: give it one, or use model.num_layers=2"
            )
    return twin


class HierarchicalVAE(VAE):
    """A :class:`~vaelik.models.vae.VAE` with ``num_layers`` = L >= 2 stochastic layers of the
    same width: the top layer's guide q(z_L|x) and prior p(z_L) (any of the posterior and prior
    groups), and for each layer below, ``lower_encoder`` features of x and the conditionals
    ``lower`` q(z_l|x, z_{l+1}) and ``conditional`` p(z_l|z_{l+1}); the first of each is used
    as given, every further one is a copy with fresh parameters. The decoder reads the whole
    latent ``[z_L, ..., z_1]``; ``init`` as for :class:`~vaelik.models.vae.VAE`. With L = 2
    this is the two-layer model, parameter for parameter."""

    def __init__(
        self,
        guide: Guide,
        lower_encoder: nn.Module,
        lower: ConditionalGaussian,
        prior: Prior,
        conditional: ConditionalGaussian,
        decoder: nn.Module,
        likelihood,
        num_layers: int = 2,
        input_scale: float = 1.0,
        init: str = "default",
    ) -> None:
        if int(num_layers) != num_layers or num_layers < 2:
            raise ConfigError(
                f"model.num_layers must be an integer >= 2, got {num_layers} (model=vae is the "
                "one-layer model)"
            )
        if num_layers > 2 and not lower.latent_dim == conditional.latent_dim == guide.latent_dim:
            raise ConfigError(
                f"model.num_layers={num_layers} stacks copies of the layer below the top, so every "
                f"layer needs the top's width: model.lower.latent_dim={lower.latent_dim}, "
                f"model.conditional.latent_dim={conditional.latent_dim}, the top's "
                f"{guide.latent_dim}; set them to latent_dim"
            )
        for layer in range(int(num_layers) - 1):
            if layer > 0:
                lower_encoder, lower, conditional = map(
                    fresh_copy, (lower_encoder, lower, conditional)
                )
            guide = TwoLayerGuide(guide, lower_encoder, lower)
            prior = TwoLayerPrior(prior, conditional)
        super().__init__(guide, prior, decoder, likelihood, input_scale, init)
