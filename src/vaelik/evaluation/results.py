"""Per-example results of an estimator over a dataset, and their summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from vaelik.inference.diagnostics import KHAT_UNRELIABLE, LOG_WEIGHT_SPREAD
from vaelik.inference.estimators import Estimate
from vaelik.metrics import bits_per_dim, mean_and_stderr

# per-example checks that only some estimators make
OPTIONAL_CHECKS = ("mc_stderr", "grid_error")


def columns() -> list[str]:
    """The per-example columns, in the order of ``per_example.csv``: ``index``, then those of
    :class:`~vaelik.inference.estimators.Estimate`."""
    return ["index", *(f.name for f in fields(Estimate))]


@dataclass
class PerExampleResults(Estimate):
    """Estimates for N examples: the per-example columns of :class:`~vaelik.inference.
    estimators.Estimate` (the one definition of the per-example schema: log p(x) in nats, its
    Monte Carlo standard error, normalised ESS, variance of log w, PSIS k-hat, a grid rule's
    error check, the flag), each ``[N]``, with each example's dataset ``index [N]``, which keys
    its random stream. ``per_example.csv`` has these columns, ``index`` first
    (:func:`columns`)."""

    index: torch.Tensor = field(kw_only=True)

    @classmethod
    def concatenate(cls, parts: Sequence[tuple[torch.Tensor, Estimate]]) -> PerExampleResults:
        """Join per-batch ``(index, estimate)`` pairs."""
        columns = {f.name: [getattr(e, f.name).cpu() for _, e in parts] for f in fields(Estimate)}
        if not parts:
            empty = torch.empty(0, dtype=torch.float64)
            return cls(*[empty] * len(fields(Estimate)), index=torch.empty(0, dtype=torch.long))
        return cls(
            index=torch.cat([i.cpu() for i, _ in parts]).long(),
            **{name: torch.cat(values) for name, values in columns.items()},
        )

    @classmethod
    def joined(cls, parts: Sequence[PerExampleResults]) -> PerExampleResults:
        """Several sets of rows as one, sorted by index; an index found twice raises (two
        processes, or a stored and a computed row, overlapping)."""
        joined = {f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        order = torch.argsort(joined["index"])
        joined = {name: value[order] for name, value in joined.items()}
        if joined["index"].unique().numel() != joined["index"].numel():
            raise RuntimeError("an example was estimated twice: the shares overlap")
        return cls(**joined)

    def summary(self, num_dims: int) -> dict[str, float | int | None]:
        """Mean log p(x) with its standard error, bits/dim of the mean, ESS and k-hat summaries."""
        log_px_mean, log_px_stderr = mean_and_stderr(self.log_px)
        khat = self.khat[torch.isfinite(self.khat)].double()
        grid_error = self.grid_error[~torch.isnan(self.grid_error)].double()
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
            "grid_error_max": grid_error.max().item() if grid_error.numel() else None,
            "flagged_share": self.flagged.double().mean().item() if self.flagged.numel() else None,
            "flag_rule": self.flag_rule(),
            "num_examples": int(self.index.numel()),
        }

    def flag_rule(self) -> str:
        """What ``flagged`` means for these examples, in words."""
        if not torch.isnan(self.grid_error).all():
            return "grid error above the rule's tolerance"
        has_khat = torch.isfinite(self.khat)
        variance = f"log-weight variance > {LOG_WEIGHT_SPREAD:g}"
        if has_khat.all():
            return f"k-hat > {KHAT_UNRELIABLE}"
        if not has_khat.any():
            return f"{variance} (K too small for a k-hat)"
        return f"k-hat > {KHAT_UNRELIABLE}, or {variance} where there is no k-hat"

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Every column as a numpy array ``[N]``, in index order."""
        order = torch.argsort(self.index)
        return {name: getattr(self, name)[order].numpy() for name in columns()}

    def rows(self) -> list[dict[str, float | int]]:
        """One dict per example, in index order, for a per-example table (without the columns
        of checks that no example has)."""
        order = torch.argsort(self.index)
        names = columns()
        for name in OPTIONAL_CHECKS:
            if torch.isnan(getattr(self, name)).all():
                names.remove(name)
        return [
            {name: (int if name == "index" else float)(getattr(self, name)[i]) for name in names}
            for i in order.tolist()
        ]
