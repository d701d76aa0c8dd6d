"""``vaelik.convergence``: mean log p(x) against K for several estimators and proposals.

Importance-type estimators draw from per-example streams, so the first K draws of a run with
K_max draws are exactly the draws of a run with K: one pass at K_max gives every row (nested
estimates). AIS chains adapt their step size together, so AIS is run afresh for each K. A grid
rule (quadrature) does not depend on K: it is computed once and is the reference line at every K.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelik.errors import ConfigError
from vaelik.evaluation.distributed import gather_results
from vaelik.evaluation.estimate import EstimatorChoice, Examples, ProposalChoice, visit_batches
from vaelik.evaluation.indexed_data import EstimationData, ExampleChoice, event_dims
from vaelik.evaluation.results import PerExampleResults
from vaelik.inference.estimators import Estimate
from vaelik.inference.log_weights import check_positive
from vaelik.inference.plan import Plan, chosen_estimator, resolve
from vaelik.models.contract import MeasurableModel, check_measurable


@dataclass
class ConvergenceTable:
    """One summary row per (estimator, proposal really used, K): ``estimator``, ``proposal``,
    ``num_samples`` and the summary of :meth:`PerExampleResults.summary`, with ``seconds``."""

    rows: list[dict[str, Any]]

    def write(self, folder: str | Path) -> Path:
        """``convergence.csv`` and ``convergence.json`` in ``folder``."""
        output_dir = Path(folder)
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "convergence.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        (output_dir / "convergence.json").write_text(json.dumps(self.rows, indent=2))
        return output_dir

    def plot(self, path: str | Path, title: str, zoom: float = 10.0) -> None:
        """The PNG of :func:`plot_convergence`."""
        plot_convergence(self.rows, Path(path), title, zoom)


def distinct_lines(
    model: MeasurableModel,
    estimators: Sequence[EstimatorChoice],
    proposals: Sequence[ProposalChoice],
    seed: int | None = None,
) -> list[Plan]:
    """Every estimator with every proposal, resolved, keeping one plan per estimator given and
    proposal really used (a comparison across proposals accepts the automatic rules): an
    estimator that draws from its own distribution (``prior``, ``quadrature``), or AIS started
    from the prior, gives the same line whatever the proposal; two
    estimators of the same name (other settings) give two lines. Every combination is checked
    first."""
    plans: dict[tuple[int, str], Plan] = {}
    for position, estimator in enumerate(estimators):
        built = chosen_estimator(estimator, {"seed": seed})
        for proposal in proposals:
            plan = resolve(model, built, proposal, accept_rules=True)
            plans.setdefault((position, plan.proposal_name), plan)
    return list(plans.values())


@torch.no_grad()
def plan_rows(
    plan: Plan,
    examples: Examples,
    ks: Sequence[int],
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One summary row per K for one resolved plan on ``examples``
    (shared out among processes when distributed, gathered before summarising)."""
    ks = sorted({check_positive("ks", k) for k in ks})
    nested = getattr(plan.estimator, "nested_in_k", False)
    exact = getattr(plan.estimator, "exact_reference", False)
    once = exact or nested  # one pass gives every row
    plans = {k: plan if exact else plan.with_num_samples(k) for k in ks}
    parts: dict[int, list] = {k: [] for k in ks}
    seconds: dict[int, float] = dict.fromkeys(ks, 0.0)

    def visit(x: torch.Tensor, index: torch.Tensor) -> None:
        if once:
            start = time.perf_counter()
            if exact:
                estimate = plan.estimate(x, index)
                nested_estimates = dict.fromkeys(ks, estimate)
            else:
                log_w = plans[ks[-1]].log_weights(x, index)
                nested_estimates = {k: Estimate.from_log_weights(log_w[:k]) for k in ks}
            seconds[ks[-1]] += time.perf_counter() - start
            for k in ks:
                parts[k].append((index, nested_estimates[k]))
            return
        for k in ks:
            start = time.perf_counter()
            parts[k].append((index, plans[k].estimate(x, index)))
            seconds[k] += time.perf_counter() - start

    label = f"{plan.estimator_name}, {plan.proposal_name}, K up to {ks[-1]}"
    visit_batches(plan.model, examples, visit, progress, label)
    rows = []
    for k in ks:
        summary = gather_results(PerExampleResults.concatenate(parts[k])).summary(
            event_dims(examples.dataset)
        )
        rows.append(
            {
                "estimator": plan.estimator_name,
                "proposal": plan.proposal_name,  # the line's, whatever K does to a mixed start
                "num_samples": k,
                **summary,
                "seconds": seconds[ks[-1]] if once else seconds[k],
            }
        )
    return rows


def convergence(
    model: MeasurableModel,
    data: EstimationData,
    *,
    ks: Sequence[int],
    estimators: Sequence[EstimatorChoice] = ("importance",),
    proposals: Sequence[ProposalChoice] = ("encoder",),
    batch_size: int | None = None,
    examples: ExampleChoice = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> ConvergenceTable:
    """Mean log p(x) against K for every estimator x proposal (by name or as objects; see
    :func:`vaelik.estimate` for ``data``, ``examples``, ``batch_size``, ``device``, ``seed``),
    one line per estimator and proposal really used."""
    check_measurable(model)
    if not list(ks):
        raise ConfigError("ks is empty: give the K values to compare, e.g. [1, 10, 100]")
    plans = distinct_lines(model, estimators, proposals, seed)
    block = math.lcm(*(plan.block for plan in plans))
    chosen = Examples.of(model, data, examples, batch_size, device, block)
    rows: list[dict[str, Any]] = []
    for plan in plans:
        rows += plan_rows(plan, chosen, ks, progress)
    return ConvergenceTable(rows)


def plot_convergence(
    rows: list[dict[str, Any]], path: Path, title: str, zoom: float = 10.0
) -> None:
    """Mean log p(x) against K (log axis), one line per estimator/proposal, +-1 standard error.

    The left panel shows every line; the right one zooms on the lines that end within ``zoom``
    nats of the best (naive Monte Carlo is usually far below and would flatten the rest).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(f"{row['estimator']} / {row['proposal']}", []).append(row)
    best = max(line[-1]["log_px_mean"] for line in lines.values())
    close = {label for label, line in lines.items() if line[-1]["log_px_mean"] > best - zoom}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, labels in zip(axes, (list(lines), [lb for lb in lines if lb in close]), strict=True):
        for label in labels:
            line = lines[label]
            k = [r["num_samples"] for r in line]
            mean = torch.tensor([r["log_px_mean"] for r in line])
            err = torch.tensor([r["log_px_stderr"] for r in line])
            ax.plot(k, mean, marker="o", label=label)
            ax.fill_between(k, mean - err, mean + err, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("K (samples per example)")
        ax.set_ylabel("mean log p(x) estimate (nats)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[0].set_title(title)
    axes[1].set_title(f"lines ending within {zoom:g} nats of the best")
    tail = [r["log_px_mean"] for label in close for r in lines[label] if r["num_samples"] >= 10]
    if tail:
        axes[1].set_ylim(min(tail) - 1, max(tail) + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
