"""Proposal distributions r(z|x) for importance sampling, built from the posterior and the prior.

A proposal is a callable ``(posterior q(z|x), prior p(z)) -> r(z|x)`` with batch shape ``[B]``
and event shape ``[L]`` that supports ``sample`` and ``log_prob``. Estimators never see which
proposal made their samples, and any proposal works with any encoder: it only uses the posterior's
mean and standard deviation.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Independent, Normal, StudentT, constraints


class EncoderProposal:
    """r(z|x) = q(z|x): the encoder's own posterior (seed eq. 10)."""

    name = "encoder"

    def __call__(self, posterior: Distribution, prior: Distribution) -> Distribution:
        return posterior


class PriorProposal:
    """r(z|x) = p(z): naive Monte Carlo from the prior (seed eq. 7); fine in 2-D, not in 50-D."""

    name = "prior"

    def __call__(self, posterior: Distribution, prior: Distribution) -> Distribution:
        return prior.expand(posterior.batch_shape)


class StudentTProposal:
    """r(z|x) = prod_l t_nu(z_l; mu_l(x), sigma_l(x)): the posterior's location and scale with
    Student-t tails (``df`` = nu > 0 degrees of freedom; nu -> inf recovers q(z|x)). Heavier tails
    than the target bound the importance weights where a Gaussian proposal is too narrow."""

    name = "student_t"

    def __init__(self, df: float = 5.0) -> None:
        if not df > 0:
            raise ValueError(f"proposal.df (degrees of freedom) must be > 0, got {df}")
        self.df = float(df)

    def __call__(self, posterior: Distribution, prior: Distribution) -> Distribution:
        loc, scale = posterior.mean, posterior.stddev
        df = torch.full_like(loc, self.df)
        return Independent(StudentT(df, loc, scale, validate_args=False), 1)


class InflatedProposal:
    """r(z|x) = N(mu(x), diag (c sigma(x))^2): the posterior widened by ``scale`` = c > 0.
    Encoders trained on the ELBO are too narrow (KL(q||p) is mode-seeking); c > 1 corrects that."""

    name = "inflated"

    def __init__(self, scale: float = 1.5) -> None:
        if not scale > 0:
            raise ValueError(f"proposal.scale (the factor c) must be > 0, got {scale}")
        self.scale = float(scale)

    def __call__(self, posterior: Distribution, prior: Distribution) -> Distribution:
        loc, scale = posterior.mean, posterior.stddev
        return Independent(Normal(loc, self.scale * scale, validate_args=False), 1)


class DefensiveMixture(Distribution):
    """alpha p(z) + (1 - alpha) q(z|x) (Hesterberg 1995): the prior component keeps every weight
    w = p(x, z) / r(z) <= p(x|z) / alpha, so no draw can carry an unbounded weight."""

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(self, prior: Distribution, posterior: Distribution, alpha: float) -> None:
        self.prior = prior.expand(posterior.batch_shape)
        self.posterior = posterior
        self.alpha = alpha
        super().__init__(posterior.batch_shape, posterior.event_shape, validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        from_prior = self.prior.sample(shape)
        from_posterior = self.posterior.sample(shape)
        pick_prior = torch.rand(shape + self.batch_shape, device=from_prior.device) < self.alpha
        return torch.where(pick_prior.unsqueeze(-1), from_prior, from_posterior)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        terms = []
        if self.alpha > 0:
            terms.append(math.log(self.alpha) + self.prior.log_prob(value))
        if self.alpha < 1:
            terms.append(math.log1p(-self.alpha) + self.posterior.log_prob(value))
        return torch.logsumexp(torch.stack(terms), dim=0)


class DefensiveProposal:
    """r(z|x) = alpha p(z) + (1 - alpha) q(z|x), ``alpha`` in [0, 1]."""

    name = "defensive"

    def __init__(self, alpha: float = 0.1) -> None:
        if not 0 <= alpha <= 1:
            raise ValueError(f"proposal.alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, posterior: Distribution, prior: Distribution) -> Distribution:
        return DefensiveMixture(prior, posterior, self.alpha)
