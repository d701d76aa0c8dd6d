"""Summaries of per-example log-likelihoods: bits per dimension, mean and standard error."""

from __future__ import annotations

import math

import torch


def bits_per_dim(log_px: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """bits/dim = -log p(x) / (D ln 2) for log p(x) in nats over D dimensions."""
    return -log_px / (num_dims * math.log(2.0))


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean over examples and its standard error (sample std / sqrt(N); 0 for one example)."""
    values = values.double()
    n = values.numel()
    if n == 0:
        raise ValueError("no examples to summarise")
    stderr = values.std().item() / math.sqrt(n) if n > 1 else 0.0
    return values.mean().item(), stderr
