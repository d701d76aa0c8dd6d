"""Reductions of log-weights ``[K, B]`` in float64: log-mean-exp, ESS, variance of log w."""

from __future__ import annotations

import math

import torch


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k), in float64 along ``dim`` (stable for any magnitudes)."""
    log_w = log_w.double()
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def normalized_ess(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Effective sample size over K, (sum w)^2 / (K sum w^2), in (0, 1]; 1 means equal weights."""
    log_w = log_w.double()
    log_ess = 2 * torch.logsumexp(log_w, dim=dim) - torch.logsumexp(2 * log_w, dim=dim)
    return torch.exp(log_ess - math.log(log_w.shape[dim]))


def log_weight_variance(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Sample variance of log w over K (0 when K = 1); large values flag an unreliable estimate."""
    log_w = log_w.double()
    if log_w.shape[dim] < 2:
        return torch.zeros_like(log_w.select(dim, 0))
    return log_w.var(dim=dim)
