"""Estimators of the marginal likelihood log p(x), per example.

Every estimator returns an :class:`Estimate`; it sees only log-weights, so a new proposal or
likelihood head needs no change here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaelik.diagnostics import log_mean_exp, log_weight_variance, normalized_ess
from vaelik.log_weights import check_positive, importance_log_weights
from vaelik.model import VAE


@dataclass
class Estimate:
    """Per-example results, each ``[B]`` float64: log p(x) estimate and its diagnostics."""

    log_px: torch.Tensor
    ess: torch.Tensor
    log_weight_var: torch.Tensor

    @classmethod
    def from_log_weights(cls, log_w: torch.Tensor) -> Estimate:
        """Reduce log-weights ``[K, B]``: log p_hat(x) = logsumexp_k log w_k - log K."""
        return cls(
            log_px=log_mean_exp(log_w),
            ess=normalized_ess(log_w),
            log_weight_var=log_weight_variance(log_w),
        )


class ImportanceSampling:
    """log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / r(z_k|x), z_k ~ r(z|x) (seed eq. 10).

    The estimate of p(x) is unbiased; its log is a lower bound in expectation (the IWAE bound,
    Burda et al. 2016) that tightens as K grows. With K = 1 and the encoder as proposal it is the
    single-sample ELBO. Args: ``num_samples`` K >= 1; ``chunk_size`` draws per decoder pass.
    """

    name = "importance"

    def __init__(self, num_samples: int = 128, chunk_size: int = 1000) -> None:
        self.num_samples = check_positive("estimator.num_samples (K)", num_samples)
        self.chunk_size = check_positive("estimator.chunk_size", chunk_size)

    def __call__(self, model: VAE, x: torch.Tensor, proposal) -> Estimate:
        log_w = importance_log_weights(model, x, proposal, self.num_samples, self.chunk_size)
        return Estimate.from_log_weights(log_w)
