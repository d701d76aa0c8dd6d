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


#: the fewest samples whose Pareto tail is long enough (5) for a k-hat
KHAT_MIN_SAMPLES = 25
#: above this k-hat the weights have effectively infinite variance (Vehtari et al. 2024)
KHAT_UNRELIABLE = 0.7
#: where there is no k-hat (K < 25, e.g. AIS with fewer chains): a variance of log w above this
#: (nats^2) means the estimate rests on a few of the draws or chains
LOG_WEIGHT_SPREAD = 1.0


def flag_unreliable(khat: torch.Tensor, log_weight_var: torch.Tensor) -> torch.Tensor:
    """Per example ``[B]`` (float64, 1 = flagged): k-hat > 0.7 where k-hat is defined, else
    a variance of the log-weights above 1."""
    flagged = torch.where(
        torch.isfinite(khat), khat > KHAT_UNRELIABLE, ~(log_weight_var <= LOG_WEIGHT_SPREAD)
    )  # a NaN variance (a -inf log-weight) is flagged, never passed
    return flagged.double()


def pareto_tail_size(num_samples: int) -> int:
    """M = min(K / 5, 3 sqrt(K)) largest weights used for the Pareto fit (Vehtari et al. 2024)."""
    return int(min(0.2 * num_samples, 3 * math.sqrt(num_samples)))


def generalized_pareto_shape(exceedances: torch.Tensor) -> torch.Tensor:
    """Shape xi of a generalised Pareto fitted to each row of ``exceedances [B, M]`` (sorted
    ascending, > 0), by the empirical-Bayes method of Zhang & Stephens (2009).

    In their parametrisation F(x) = 1 - (1 - theta x / k')^(1/k'), theta = k' / sigma and
    xi = -k'. For a grid theta_j = 1/x_(M) + (1 - sqrt(m / (j - 1/2))) / (3 x_(M/4)),
    j = 1..m = 30 + sqrt(M), the profile estimate is k'(theta) = -mean log(1 - theta x) and the
    profile log-likelihood l(theta) = M (log(theta / k') + k' - 1); theta_hat is the
    posterior mean of theta under weights softmax(l), and xi = mean log(1 - theta_hat x).
    """
    x = exceedances.double()
    n = x.shape[-1]
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=torch.float64, device=x.device)
    quartile = x[:, int(n / 4 + 0.5) - 1].unsqueeze(-1)
    theta = 1.0 / x[:, -1:] + (1.0 - torch.sqrt(m / (j - 0.5))) / (3.0 * quartile)  # [B, m]
    k_prime = -torch.log1p(-theta.unsqueeze(-1) * x.unsqueeze(1)).mean(-1)  # [B, m]
    profile = n * (torch.log(theta / k_prime) + k_prime - 1.0)
    theta_hat = (torch.softmax(profile, dim=-1) * theta).sum(-1, keepdim=True)
    return torch.log1p(-theta_hat * x).mean(-1)


def pareto_khat(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """PSIS k-hat (Vehtari, Simpson, Gelman, Yao & Gabry 2024) of the weights along ``dim``.

    Fits a generalised Pareto to the M largest weights' excess over the (M+1)-th largest and
    returns its shape, shrunk towards 0.5 as in the paper: (M xi + 5) / (M + 10). Values above 0.7
    mean the weights' variance is effectively infinite and the estimate should not be trusted;
    below 0.5 the central limit theorem holds. NaN where it cannot be computed: K < 25 (M < 5)
    or a flat tail (all of the largest weights equal, e.g. an exact proposal).
    """
    log_w = log_w.double().movedim(dim, -1)
    flat = log_w.reshape(-1, log_w.shape[-1])
    tail = pareto_tail_size(flat.shape[-1])
    khat = torch.full((flat.shape[0],), float("nan"), dtype=torch.float64, device=log_w.device)
    if tail < 5:
        return khat.reshape(log_w.shape[:-1])
    top = torch.topk(flat, tail + 1, dim=-1).values  # descending
    scaled = torch.exp(top - top[:, :1])  # weights / max weight
    exceedances = (scaled[:, :tail] - scaled[:, tail:]).flip(-1)  # ascending
    quartile = exceedances[:, int(tail / 4 + 0.5) - 1]
    fit = (quartile > 0) & torch.isfinite(top).all(-1)
    if fit.any():
        xi = generalized_pareto_shape(exceedances[fit])
        khat[fit] = (tail * xi + 10 * 0.5) / (tail + 10)
    return khat.reshape(log_w.shape[:-1])


def log_weight_standard_error(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Standard error of the importance estimate mean(w): sqrt((mean(w^2) - mean(w)^2) / (K-1)),
    computed from log-weights in float64 without leaving log space until the end."""
    log_w = log_w.double()
    k = log_w.shape[dim]
    log_mean = log_mean_exp(log_w, dim)
    log_mean_sq = log_mean_exp(2 * log_w, dim)
    # mean(w^2) - mean(w)^2 = exp(log_mean_sq) (1 - exp(2 log_mean - log_mean_sq))
    spread = log_mean_sq + torch.log1p(-torch.exp(torch.clamp(2 * log_mean - log_mean_sq, max=0.0)))
    return torch.exp(0.5 * (spread - math.log(max(k - 1, 1))))
