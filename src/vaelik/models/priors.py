"""Priors p(z): the standard normal, a learned mixture of Gaussians, and the VampPrior.

A prior gives ``log_prob(z [..., L]) -> [...]``, draws from given noise with
``sample(noise [..., noise_dims]) -> z [..., L]`` (the component of a mixture is chosen by a
uniform made from the first noise value, u = Phi(eps)), offers itself as a torch distribution
where it is one (for a closed-form KL), and may ``bind`` to the model's guide (the VampPrior
uses the guide's top layer).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaelik.errors import ConfigError, UnsupportedCombinationError
from vaelik.models.guides import Guide, check_latent_dim

#: a mixture's loc ``[C, L]``, scale ``[C, L]`` and log weights ``[C]``
Components = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Prior(nn.Module):
    """The shared interface; see the module docstring."""

    latent_dim: int
    noise_dims: int

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distribution(self) -> Distribution | None:
        return None

    def bind(self, guide: Guide) -> None:
        """Called once by the model with its guide; most priors ignore it."""


class StandardNormal(Prior):
    """p(z) = N(0, I_L)."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = self.noise_dims = check_latent_dim(latent_dim)
        self.register_buffer("loc", torch.zeros(self.latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(self.latent_dim), persistent=False)

    def distribution(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(z)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return noise


def mixture_log_prob(
    z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, log_weights: torch.Tensor
) -> torch.Tensor:
    """log sum_c pi_c N(z; loc_c, diag scale_c^2) for ``z [..., L]``, components ``loc``,
    ``scale`` ``[C, L]`` and ``log_weights`` ``[C]`` (normalised): ``[...]``.

    The squared distances come from the expansion
    sum_l (z_l - m_cl)^2 / s_cl^2 = z^2 . s_c^-2 - 2 z . (m_c s_c^-2) + sum_l m_cl^2 s_cl^-2,
    two matrix products instead of a ``[..., C, L]`` tensor, computed in float64 so that the
    cancellation between large terms costs no precision.
    """
    shape = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1]).double()
    precision = scale.double().pow(-2)  # [C, L]
    weighted_loc = loc.double() * precision
    squared = (
        flat.pow(2) @ precision.T
        - 2 * flat @ weighted_loc.T
        + (loc.double() * weighted_loc).sum(-1)
    )  # [N, C]
    log_norm = -scale.double().log().sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
    log_components = log_weights.double() + log_norm - 0.5 * squared
    return torch.logsumexp(log_components, dim=-1).reshape(shape).to(z.dtype)


def mixture_sample(
    noise: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, log_weights: torch.Tensor
) -> torch.Tensor:
    """One draw per row of ``noise [..., 1 + L]``: the component whose cumulative weight
    first exceeds u = Phi(noise[..., 0]), then loc_c + scale_c * noise[..., 1:]."""
    uniform = torch.special.ndtr(noise[..., 0].double())
    cumulative = torch.cumsum(log_weights.double().exp(), 0)
    component = torch.searchsorted(cumulative, uniform.contiguous()).clamp(max=loc.shape[0] - 1)
    return loc[component] + scale[component] * noise[..., 1:]


class MixturePrior(Prior):
    """p(z) = sum_c pi_c N(z; m_c, diag s_c^2) with learned means, scales and weights
    (``components`` = C). Means start spread as N(0, I), scales at 1, weights uniform."""

    def __init__(self, latent_dim: int, components: int = 10) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        if int(components) != components or components < 1:
            raise ConfigError(f"prior.components must be an integer >= 1, got {components}")
        self.noise_dims = self.latent_dim + 1
        self.means = nn.Parameter(torch.randn(int(components), self.latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(int(components), self.latent_dim))
        self.logits = nn.Parameter(torch.zeros(int(components)))

    #: the components while the parameters are held constant (:meth:`held_constant`)
    _held: Components | None = None

    def components(self) -> Components:
        """loc ``[C, L]``, scale ``[C, L]``, log pi ``[C]``."""
        return self.means, self.log_scales.exp(), torch.log_softmax(self.logits, 0)

    def current_components(self) -> Components:
        """The components held by :meth:`held_constant`, or else computed now."""
        return self._held if self._held is not None else self.components()

    @contextmanager
    def held_constant(self) -> Iterator[None]:
        """Within the block (:func:`~vaelik.models.frozen.frozen`, the parameters fixed) the
        components are computed once, without gradients in the parameters. A scope inside
        another keeps the outer one's components."""
        if self._held is not None:
            yield
            return
        with torch.no_grad():
            loc, scale, log_weights = self.components()
            self._held = loc.detach(), scale.detach(), log_weights.detach()
        try:
            yield
        finally:
            self._held = None

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(z, *self.current_components())

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return mixture_sample(noise, *self.current_components())


class VampPrior(MixturePrior):
    """p(z) = (1/C) sum_c q(z | u_c) (Tomczak & Welling 2018): the guide's top-layer posterior
    at C learned pseudo-inputs u_c (``num_pseudo_inputs``), images of ``shape`` kept in [0, 1]
    by a hard tanh. Pseudo-inputs start at N(``init_mean``, ``init_std``^2) per pixel, as in
    the paper's code. The guide is bound by the model (it is not a sub-module of the prior)."""

    def __init__(
        self,
        latent_dim: int,
        shape: Sequence[int],
        num_pseudo_inputs: int = 500,
        init_mean: float = 0.05,
        init_std: float = 0.01,
    ) -> None:
        nn.Module.__init__(self)
        self.latent_dim = check_latent_dim(latent_dim)
        if int(num_pseudo_inputs) != num_pseudo_inputs or num_pseudo_inputs < 1:
            raise ConfigError(
                f"prior.num_pseudo_inputs must be an integer >= 1, got {num_pseudo_inputs}"
            )
        self.noise_dims = self.latent_dim + 1
        size = (int(num_pseudo_inputs), *(int(s) for s in shape))
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(size))
        self._guide: Guide | None = None

    def bind(self, guide: Guide) -> None:
        if not guide.gaussian_top:
            guide.top_gaussian(self.pseudo_inputs)  # raises, naming the guide and the fix
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in guide.modules()):
            raise UnsupportedCombinationError(
                "prior=vampprior with an encoder that has batch norm (encoder=resnet): the "
                "pseudo-inputs would pass through batch statistics, so the prior trained (batch "
                "statistics) and the prior evaluated (running statistics) would differ; use "
                "encoder=mlp or encoder=conv, or prior=mixture"
            )
        # a plain attribute, not a sub-module: the guide's weights belong to the model once
        object.__setattr__(self, "_guide", guide)

    def components(self) -> Components:
        if self._guide is None:
            raise RuntimeError("the VampPrior is used before a model bound it to its guide")
        count = self.pseudo_inputs.shape[0]
        inputs = torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        top = self._guide.top_gaussian(inputs)
        if top.loc.shape[-1] != self.latent_dim:
            raise ConfigError(
                f"prior.latent_dim={self.latent_dim} but the guide's top layer has "
                f"{top.loc.shape[-1]} dimensions"
            )
        log_weights = torch.full((count,), -math.log(count), device=top.loc.device)
        return top.loc, top.scale, log_weights
