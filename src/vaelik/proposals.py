"""Proposal distributions r(z|x) for importance sampling, built from the posterior and the prior.

A proposal is a callable ``(posterior q(z|x), prior p(z)) -> distribution over z`` with batch
shape ``[B]`` and event shape ``[L]``: it supports ``sample`` and ``log_prob``. Estimators never
see which proposal made their samples.
"""

from __future__ import annotations

from torch.distributions import Distribution


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
