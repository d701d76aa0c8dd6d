"""Estimators of the marginal likelihood log p(x), per example.

Every estimator maps ``(model, x [B, C, H, W], index [B], proposal)`` to an :class:`Estimate`
built from log-weights ``[K, B]``, so a new guide, prior, proposal or likelihood head needs no
change here. Annealed importance sampling lives in :mod:`vaelik.inference.ais`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelik.inference.diagnostics import (
    flag_unreliable,
    log_mean_exp,
    log_weight_variance,
    normalized_ess,
    pareto_khat,
)
from vaelik.inference.log_weights import (
    check_positive,
    default_chunk_size,
    importance_log_weights,
)
from vaelik.inference.proposals import Proposal
from vaelik.models.vae import VAE


@dataclass
class Estimate:
    """Per-example results, each ``[B]`` float64: the log p(x) estimate and its diagnostics
    (normalised ESS, variance of log w, PSIS k-hat; see :mod:`vaelik.inference.diagnostics`),
    and, for a deterministic rule (:mod:`vaelik.inference.quadrature`), its error check in nats
    (NaN for sampling estimators); ``flagged`` is 1 where the estimator's own check says the
    estimate should not be trusted (:func:`~vaelik.inference.diagnostics.flag_unreliable`, or
    the grid error above the rule's tolerance), else 0."""

    log_px: torch.Tensor
    ess: torch.Tensor
    log_weight_var: torch.Tensor
    khat: torch.Tensor
    grid_error: torch.Tensor
    flagged: torch.Tensor

    @classmethod
    def from_log_weights(cls, log_w: torch.Tensor) -> Estimate:
        """Reduce log-weights ``[K, B]``: log p_hat(x) = logsumexp_k log w_k - log K."""
        log_px = log_mean_exp(log_w)
        log_weight_var = log_weight_variance(log_w)
        khat = pareto_khat(log_w)
        return cls(
            log_px=log_px,
            ess=normalized_ess(log_w),
            log_weight_var=log_weight_var,
            khat=khat,
            grid_error=torch.full_like(log_px, math.nan),
            flagged=flag_unreliable(khat, log_weight_var),
        )


class LogWeightEstimator:
    """An estimator defined by its log-weights ``[K, B]``: subclasses implement
    ``log_weights``; K, the chunk size, the seed, the reported name, the choice of proposal and
    the reduction to an :class:`Estimate` are shared."""

    def __init__(
        self,
        num_samples: int,
        chunk_size: int | None,
        seed: int,
        name: str,
        proposal: Proposal | None,
    ) -> None:
        self.num_samples = check_positive("estimator.num_samples (K)", num_samples)
        self.chunk_size = (
            None if chunk_size is None else check_positive("estimator.chunk_size", chunk_size)
        )
        self.seed = int(seed)
        self.name = name
        self.fixed_proposal = proposal

    #: True where the estimator needs log r(z|x) at latents r did not draw (AIS)
    needs_log_prob = False

    def proposal_for(self, model: VAE, proposal: Proposal) -> Proposal:
        """The proposal this estimator actually uses for ``model`` given the run's
        ``proposal``."""
        return self.fixed_proposal if self.fixed_proposal is not None else proposal

    def pairs_per_pass(self, device: torch.device) -> int:
        """``chunk_size``, or where it is None the size that suits ``device``
        (:func:`~vaelik.inference.log_weights.default_chunk_size`)."""
        return default_chunk_size(device) if self.chunk_size is None else self.chunk_size

    def check(self, model: VAE, proposal: Proposal) -> None:
        """Fail before any work if this estimator cannot run on ``model`` with ``proposal``."""
        self.proposal_for(model, proposal).check(model, needs_log_prob=self.needs_log_prob)

    def log_weights(
        self, model: VAE, x: torch.Tensor, index: torch.Tensor, proposal: Proposal
    ) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self, model: VAE, x: torch.Tensor, index: torch.Tensor, proposal: Proposal
    ) -> Estimate:
        return Estimate.from_log_weights(self.log_weights(model, x, index, proposal))


class ImportanceSampling(LogWeightEstimator):
    """log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / r(z_k|x), z_k ~ r(z|x) (seed eq. 10).

    The estimate of p(x) is unbiased; its log is a lower bound in expectation (the IWAE bound,
    Burda et al. 2016) that tightens as K grows. With K = 1 and the encoder as proposal it is the
    single-sample ELBO. With ``proposal`` set (e.g. the prior, seed eq. 7) it ignores the run's
    proposal: that is the naive Monte Carlo estimator ``estimator=prior``.

    Args:
        num_samples: K >= 1 draws per example.
        chunk_size: (draw, example) pairs per decoder pass; bounds memory, not the result. None:
            a size that suits the device (:func:`~vaelik.inference.log_weights.default_chunk_size`).
        seed: mixed with each example's index into its random stream.
        name: reported in summaries.
        proposal: a fixed proposal that replaces the run's, or None.
    """

    # the first K draws of a run with more draws are exactly the draws of a run with K
    nested_in_k = True

    def __init__(
        self,
        num_samples: int = 128,
        chunk_size: int | None = None,
        seed: int = 0,
        name: str = "importance",
        proposal: Proposal | None = None,
    ) -> None:
        super().__init__(num_samples, chunk_size, seed, name, proposal)

    def log_weights(
        self, model: VAE, x: torch.Tensor, index: torch.Tensor, proposal: Proposal
    ) -> torch.Tensor:
        """Log-weights ``[K, B]`` in float64."""
        return importance_log_weights(
            model,
            x,
            index,
            self.proposal_for(model, proposal),
            self.num_samples,
            self.pairs_per_pass(x.device),
            self.seed,
        )
