"""Run an estimator over a dataset, example by example, and summarise the results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from vaelik.estimators import Estimate
from vaelik.metrics import bits_per_dim, mean_and_stderr
from vaelik.model import VAE


@dataclass
class PerExampleResults:
    """Estimates for N examples, each ``[N]``: dataset index, log p(x) (nats), ESS, var of log w."""

    index: torch.Tensor
    log_px: torch.Tensor
    ess: torch.Tensor
    log_weight_var: torch.Tensor

    def summary(self, num_dims: int) -> dict[str, float | int]:
        """Mean log p(x) with its standard error, bits/dim of the mean, mean ESS, count."""
        log_px_mean, log_px_stderr = mean_and_stderr(self.log_px)
        return {
            "log_px_mean": log_px_mean,
            "log_px_stderr": log_px_stderr,
            "bpd": float(bits_per_dim(log_px_mean, num_dims)),
            "bpd_stderr": log_px_stderr / (num_dims * math.log(2.0)),
            "ess_mean": self.ess.double().mean().item(),
            "log_weight_var_mean": self.log_weight_var.double().mean().item(),
            "num_examples": int(self.index.numel()),
        }

    def rows(self) -> list[dict[str, float | int]]:
        """One dict per example, in index order, for a per-example table."""
        order = torch.argsort(self.index)
        return [
            {
                "index": int(self.index[i]),
                "log_px": float(self.log_px[i]),
                "ess": float(self.ess[i]),
                "log_weight_var": float(self.log_weight_var[i]),
            }
            for i in order.tolist()
        ]


@torch.no_grad()
def estimate_examples(
    model: VAE,
    dataset: Dataset,
    estimator,
    proposal,
    indices: Sequence[int],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> PerExampleResults:
    """Apply ``estimator`` to the examples ``indices`` of ``dataset`` (items are ``(x, index)``)."""
    was_training = model.training
    model.eval()
    parts: list[tuple[torch.Tensor, Estimate]] = []
    try:
        for x, index in DataLoader(Subset(dataset, list(indices)), batch_size=batch_size):
            parts.append((torch.as_tensor(index), estimator(model, x.to(device), proposal)))
    finally:
        model.train(was_training)
    if not parts:
        empty = torch.empty(0, dtype=torch.float64)
        return PerExampleResults(torch.empty(0, dtype=torch.long), empty, empty, empty)
    return PerExampleResults(
        index=torch.cat([i for i, _ in parts]).long(),
        log_px=torch.cat([e.log_px.cpu() for _, e in parts]),
        ess=torch.cat([e.ess.cpu() for _, e in parts]),
        log_weight_var=torch.cat([e.log_weight_var.cpu() for _, e in parts]),
    )
