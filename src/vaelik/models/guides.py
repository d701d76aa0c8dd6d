"""Guides q(z|x): networks that draw reparameterised latents with their log-density.

A guide maps a batch ``x [B, C, H, W]`` (already scaled for the encoder) to a :class:`Posterior`,
q(z|x) for that batch with the encoder run once. Every posterior here starts from a diagonal
Gaussian *base* draw z0 = loc + scale * eps (eps ~ N(0, I), ``loc``, ``scale`` ``[B, L0]``) and
then *completes* it: nothing more for the diagonal Gaussian, autoregressive flow steps for IAF,
a lower stochastic layer for the hierarchical guide. Proposals for importance sampling replace
the base (Student-t tails, a wider scale) and keep the completion, so they work for every guide.

Latents are one flat tensor ``z [K, B, L]``; a guide with several stochastic layers documents
its layout (top layer first). Noise is given, never drawn here, so that per-example random
streams stay exact for every guide: ``noise [K, B, noise_dims]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaelik.errors import ConfigError, UnsupportedCombinationError

BaseLogProb = Callable[[torch.Tensor], torch.Tensor]


def gaussian_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, diag scale^2) summed over the last dimension: ``[..., L] -> [...]``."""
    return Independent(Normal(loc, scale, validate_args=False), 1).log_prob(z)


class ScaleRule:
    """How a Gaussian layer turns its unconstrained output ``h [..., L]`` into sigma > 0:

    - ``log_var_bounds = (lo, hi)``: log sigma^2 = hardtanh(h, lo, hi), the VampPrior paper's
      rule with (-6, 2) (sigma in [0.05, 2.72]; h outside the range gets no gradient);
    - ``log_scale_bound = b``: log sigma = b tanh(h), log sigma in [-b, b] (smooth);
    - neither: sigma = softplus(h) + ``min_scale`` (unbounded above).

    A bound keeps early training from producing infinite importance weights; the two bounds
    exclude each other.
    """

    def __init__(
        self,
        log_scale_bound: float | None = None,
        min_scale: float = 1e-4,
        log_var_bounds: Sequence[float] | None = None,
    ) -> None:
        if log_scale_bound is not None and log_scale_bound <= 0:
            raise ConfigError(f"log_scale_bound must be > 0 or null, got {log_scale_bound}")
        if min_scale < 0:
            raise ConfigError(f"min_scale must be >= 0, got {min_scale}")
        if log_var_bounds is not None:
            if len(log_var_bounds) != 2 or not log_var_bounds[0] < log_var_bounds[1]:
                raise ConfigError(
                    f"log_var_bounds must be [low, high] with low < high, got {log_var_bounds}"
                )
            if log_scale_bound is not None:
                raise ConfigError(
                    "log_var_bounds and log_scale_bound are two bounds on the same scale: set "
                    "one of them to null"
                )
        self.log_scale_bound, self.min_scale = log_scale_bound, min_scale
        self.log_var_bounds: tuple[float, float] | None = None
        if log_var_bounds is not None:
            self.log_var_bounds = (float(log_var_bounds[0]), float(log_var_bounds[1]))

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """sigma ``[..., L]`` from ``raw [..., L]``."""
        if self.log_var_bounds is not None:
            low, high = self.log_var_bounds
            return torch.exp(0.5 * F.hardtanh(raw, low, high))
        if self.log_scale_bound is None:
            return F.softplus(raw) + self.min_scale
        return torch.exp(self.log_scale_bound * torch.tanh(raw))


def check_latent_dim(latent_dim: int) -> int:
    if int(latent_dim) != latent_dim or latent_dim < 1:
        raise ConfigError(f"latent_dim must be an integer >= 1, got {latent_dim}")
    return int(latent_dim)


def check_encoder_features(name: str, given: int | None, needed: int) -> None:
    """The encoder's output width (``encoder_features``, from the config) must be ``needed``."""
    if given is not None and int(given) != needed:
        raise ConfigError(
            f"posterior={name} needs {needed} encoder outputs, the config gives "
            f"encoder_features={given}: set encoder.out_features=${{posterior.encoder_features}}"
        )


class Posterior:
    """q(z|x) for a batch: a diagonal-Gaussian base ``loc``, ``scale`` ``[B, L0]`` completed by
    the guide's own transformation (see the module docstring).

    Subclasses implement :meth:`complete`, :meth:`log_prob_with_base`, :meth:`rows` and
    :attr:`mean`; ``noise_dims`` is L0 plus the noise the completion uses.
    """

    loc: torch.Tensor
    scale: torch.Tensor
    noise_dims: int
    #: False where log q(z|x) of latents the guide did not draw is not available (IAF)
    can_score: bool = True

    @property
    def base_dims(self) -> int:
        return self.loc.shape[-1]

    def sample(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``noise [K, B, noise_dims]`` -> latents ``z [K, B, L]`` and ``log q(z|x) [K, B]``."""
        base = noise[..., : self.base_dims] * self.scale + self.loc
        log_base = gaussian_log_prob(base, self.loc, self.scale)
        return self.complete(base, log_base, noise[..., self.base_dims :])

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) ``[K, B]`` of given latents ``z [K, B, L]``."""
        return self.log_prob_with_base(
            z, lambda base: gaussian_log_prob(base, self.loc, self.scale)
        )

    def complete(
        self, base: torch.Tensor, log_base: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A base draw ``[K, B, L0]`` with its log-density under whatever drew it ``[K, B]``,
        and the rest of the noise -> ``(z, log density of z)`` under the same base."""
        raise NotImplementedError

    def log_prob_with_base(self, z: torch.Tensor, base_log_prob: BaseLogProb) -> torch.Tensor:
        """log-density ``[K, B]`` of ``z`` when the base is drawn from ``base_log_prob``'s
        distribution and completed by this guide (raises where the guide cannot invert)."""
        raise NotImplementedError

    def rows(self, rows: slice) -> Posterior:
        """The same posterior for batch rows ``rows``."""
        raise NotImplementedError

    @property
    def mean(self) -> torch.Tensor:
        """A representative latent per example ``[B, L]`` (for reconstructions)."""
        raise NotImplementedError

    def distribution(self) -> Distribution | None:
        """q(z|x) as a torch distribution where it is one (for a closed-form KL), else None."""
        return None


class DiagonalGaussianPosterior(Posterior):
    """q(z|x) = N(loc, diag scale^2): the base is the whole posterior."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.loc, self.scale = loc, scale
        self.noise_dims = loc.shape[-1]

    def complete(self, base, log_base, noise):
        return base, log_base

    def log_prob_with_base(self, z, base_log_prob):
        return base_log_prob(z)

    def rows(self, rows: slice) -> DiagonalGaussianPosterior:
        return DiagonalGaussianPosterior(self.loc[rows], self.scale[rows])

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def distribution(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)


class Guide(nn.Module):
    """What every guide offers: ``forward(x) -> Posterior``, ``latent_dim`` (L, all layers),
    ``can_score``, and ``top_gaussian(x)`` where its top layer is a diagonal Gaussian (the
    VampPrior mixes q(z_top|u) over pseudo-inputs u)."""

    name: str
    latent_dim: int
    can_score: bool = True
    gaussian_top: bool = False

    def top_gaussian(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        """q(z_top|x) where the top layer is a diagonal Gaussian (``gaussian_top``)."""
        raise UnsupportedCombinationError(
            f"posterior={self.name} has no diagonal-Gaussian top layer, which prior=vampprior "
            "needs (it is a mixture of q(z|u) over pseudo-inputs u): use "
            "posterior=diagonal_gaussian, or prior=mixture"
        )


class DiagonalGaussianGuide(Guide):
    """q(z|x) = N(mu(x), diag sigma(x)^2) from encoder outputs ``[B, 2L]``.

    The first L outputs are mu; the last L give sigma by a :class:`ScaleRule`:
    ``softplus(h) + min_scale``, or with ``log_scale_bound = b`` (``experiment=cifar10`` sets
    5) ``exp(b * tanh(h))``, or with ``log_var_bounds = (lo, hi)`` (the VampPrior paper's
    (-6, 2)) ``exp(hardtanh(h, lo, hi) / 2)``.
    """

    name = "diagonal_gaussian"
    gaussian_top = True

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        log_scale_bound: float | None = None,
        min_scale: float = 1e-4,
        encoder_features: int | None = None,
        log_var_bounds: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.scale_rule = ScaleRule(log_scale_bound, min_scale, log_var_bounds)
        check_encoder_features(self.name, encoder_features, 2 * self.latent_dim)
        self.encoder = encoder

    def gaussian(self, params: torch.Tensor) -> DiagonalGaussianPosterior:
        """Encoder outputs ``[B, 2L]`` -> N(mu, diag sigma^2)."""
        if params.shape[-1] != 2 * self.latent_dim:
            raise ConfigError(
                f"the encoder gives {params.shape[-1]} outputs, the posterior needs "
                f"2 * latent_dim = {2 * self.latent_dim}: set encoder.out_features to "
                "2 * latent_dim"
            )
        loc, raw_scale = params.chunk(2, dim=-1)
        return DiagonalGaussianPosterior(loc, self.scale_rule(raw_scale))

    def forward(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        return self.gaussian(self.encoder(x))

    def top_gaussian(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        return self(x)
