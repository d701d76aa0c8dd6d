"""Run an estimator over a dataset, example by example, and summarise the results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from vaelik.estimators import Estimate
from vaelik.metrics import bits_per_dim, mean_and_stderr

KHAT_UNRELIABLE = 0.7


@dataclass
class PerExampleResults:
    """Estimates for N examples, each ``[N]``: dataset index, log p(x) (nats), normalised ESS,
    variance of log w, and PSIS k-hat (NaN where K is too small to fit it)."""

    index: torch.Tensor
    log_px: torch.Tensor
    ess: torch.Tensor
    log_weight_var: torch.Tensor
    khat: torch.Tensor

    @classmethod
    def concatenate(cls, parts: Sequence[tuple[torch.Tensor, Estimate]]) -> PerExampleResults:
        """Join per-batch ``(index, estimate)`` pairs."""
        columns = {f.name: [getattr(e, f.name).cpu() for _, e in parts] for f in fields(Estimate)}
        if not parts:
            empty = torch.empty(0, dtype=torch.float64)
            return cls(torch.empty(0, dtype=torch.long), empty, empty, empty, empty)
        return cls(
            index=torch.cat([i.cpu() for i, _ in parts]).long(),
            **{name: torch.cat(values) for name, values in columns.items()},
        )

    def summary(self, num_dims: int) -> dict[str, float | int | None]:
        """Mean log p(x) with its standard error, bits/dim of the mean, ESS and k-hat summaries."""
        log_px_mean, log_px_stderr = mean_and_stderr(self.log_px)
        khat = self.khat[torch.isfinite(self.khat)].double()
        quantiles = (
            torch.quantile(khat, torch.tensor([0.5, 0.9], dtype=torch.float64)).tolist()
            if khat.numel()
            else [None, None]
        )
        return {
            "log_px_mean": log_px_mean,
            "log_px_stderr": log_px_stderr,
            "bpd": float(bits_per_dim(log_px_mean, num_dims)),
            "bpd_stderr": log_px_stderr / (num_dims * math.log(2.0)),
            "ess_mean": self.ess.double().mean().item(),
            "ess_min": self.ess.double().min().item(),
            "log_weight_var_mean": self.log_weight_var.double().mean().item(),
            "khat_mean": khat.mean().item() if khat.numel() else None,
            "khat_median": quantiles[0],
            "khat_p90": quantiles[1],
            "khat_max": khat.max().item() if khat.numel() else None,
            "khat_share_above_0.7": (
                (khat > KHAT_UNRELIABLE).double().mean().item() if khat.numel() else None
            ),
            "khat_undefined": int(self.khat.numel() - khat.numel()),
            "num_examples": int(self.index.numel()),
        }

    def rows(self) -> list[dict[str, float | int]]:
        """One dict per example, in index order, for a per-example table."""
        order = torch.argsort(self.index)
        names = [f.name for f in fields(self)]
        return [
            {name: (int if name == "index" else float)(getattr(self, name)[i]) for name in names}
            for i in order.tolist()
        ]


def estimate_examples(
    model: torch.nn.Module,
    dataset: Dataset,
    estimator,
    proposal,
    indices: Sequence[int],
    batch_size: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> PerExampleResults:
    """Apply ``estimator`` to the examples ``indices`` of ``dataset`` (items are ``(x, index)``),
    with a progress bar over examples when ``progress``."""
    was_training = model.training
    model.eval()
    parts: list[tuple[torch.Tensor, Estimate]] = []
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size)
    bar = tqdm(total=len(indices), unit="example", disable=not progress, dynamic_ncols=True)
    try:
        for x, index in loader:
            index = torch.as_tensor(index)
            parts.append((index, estimator(model, x.to(device), index, proposal)))
            bar.update(len(index))
    finally:
        bar.close()
        model.train(was_training)
    return PerExampleResults.concatenate(parts)


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(indices: Sequence[int]) -> list[int]:
    """This process's share of ``indices``: every world-size-th one, from its rank. Shares are
    disjoint and cover every index once (no padding, unlike a DistributedSampler)."""
    rank, size = world()
    return list(indices)[rank::size]


def gather_results(results: PerExampleResults) -> PerExampleResults:
    """Every process's results joined, on every process, sorted by index; an index seen twice
    (it cannot be, with :func:`shard`) raises instead of being counted twice."""
    _, size = world()
    if size == 1:
        parts = [results]
    else:
        parts = [None] * size
        dist.all_gather_object(
            parts, {f.name: getattr(results, f.name).cpu() for f in fields(results)}
        )
        parts = [PerExampleResults(**part) for part in parts]
    joined = {
        f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(PerExampleResults)
    }
    order = torch.argsort(joined["index"])
    joined = {name: value[order] for name, value in joined.items()}
    if joined["index"].unique().numel() != joined["index"].numel():
        raise RuntimeError("an example was evaluated by two processes: the shards overlap")
    return PerExampleResults(**joined)
