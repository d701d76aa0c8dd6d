"""Mean log p(x) against K for several estimators and proposals (``vaelik-convergence``).

Importance-type estimators draw from per-example streams, so the first K draws of a run with
K_max draws are exactly the draws of a run with K: one pass at K_max gives every row (nested
estimates, as in the seed's figures 2 and 3). AIS chains adapt their step size together, so AIS
is run afresh for each K.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from vaelik.data.datamodule import example_indices
from vaelik.evaluation.distributed import gather_results, shard, world
from vaelik.evaluation.formatting import figure, grid_error_text, khat_text, report_written
from vaelik.evaluation.results import PerExampleResults
from vaelik.evaluation.runner import load_model, pick_device, share_note
from vaelik.inference.estimators import Estimate
from vaelik.inference.log_weights import check_positive
from vaelik.progress import example_progress


def with_num_samples(estimator, num_samples: int):
    """A copy of ``estimator`` drawing ``num_samples`` per example."""
    other = copy.copy(estimator)
    other.num_samples = check_positive("K", num_samples)
    return other


@torch.no_grad()
def convergence_rows(
    model,
    dataset,
    indices,
    estimator,
    proposal,
    ks: list[int],
    batch_size: int,
    device,
    num_dims: int,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One summary row per K for one (estimator, proposal) pair on the examples ``indices``
    (shared out among processes when distributed, and gathered before summarising), with a
    progress bar over examples on the first process when ``progress``. An exact rule
    (``exact_reference``, e.g. quadrature) is computed once and repeated at every K."""
    ks = sorted({check_positive("K", k) for k in ks})
    nested = getattr(estimator, "nested_in_k", False)
    # a grid rule does not depend on K: computed once, it is the reference line at every K
    exact = getattr(estimator, "exact_reference", False)
    parts: dict[int, list] = {k: [] for k in ks}
    seconds: dict[int, float] = dict.fromkeys(ks, 0.0)
    model.eval()
    local = shard(indices)
    label = f"{estimator.name}, {estimator.proposal_for(model, proposal).name}, K up to {ks[-1]}"
    label += share_note(world()[1])
    with example_progress(len(local), label, progress and world()[0] == 0) as advance:
        for x, index in DataLoader(Subset(dataset, local), batch_size=batch_size):
            x, index = x.to(device), torch.as_tensor(index)
            if exact:
                start = time.perf_counter()
                estimate = estimator(model, x, index, proposal)
                seconds[ks[-1]] += time.perf_counter() - start
                for k in ks:
                    parts[k].append((index, estimate))
            elif nested:
                start = time.perf_counter()
                log_w = with_num_samples(estimator, ks[-1]).log_weights(model, x, index, proposal)
                seconds[ks[-1]] += time.perf_counter() - start
                for k in ks:
                    parts[k].append((index, Estimate.from_log_weights(log_w[:k])))
            else:
                for k in ks:
                    start = time.perf_counter()
                    parts[k].append(
                        (index, with_num_samples(estimator, k)(model, x, index, proposal))
                    )
                    seconds[k] += time.perf_counter() - start
            advance(len(index))
    rows = []
    for k in ks:
        summary = gather_results(PerExampleResults.concatenate(parts[k])).summary(num_dims)
        rows.append(
            {
                "estimator": estimator.name,
                "proposal": estimator.proposal_for(model, proposal).name,
                "num_samples": k,
                **summary,
                "seconds": seconds[ks[-1]] if nested or exact else seconds[k],
            }
        )
    return rows


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


def write_table(rows: list[dict[str, Any]], output_dir: Path) -> None:
    """``convergence.csv`` and ``convergence.json`` in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "convergence.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / "convergence.json").write_text(json.dumps(rows, indent=2))


def convergence(cfg: DictConfig) -> list[dict[str, Any]]:
    """Estimate log p(x) for every K in ``cfg.ks`` x estimator x proposal; write table and plot."""
    model, datamodule = load_model(cfg)
    device = pick_device(cfg.device)
    model.to(device)
    dataset = datamodule.dataset(cfg.split)
    indices = example_indices(dataset, cfg.num_examples)
    count = len(indices)
    pairs, lines = [], set()
    for estimator_name in cfg.estimators:
        for proposal_name in cfg.proposals:
            choice = compose(
                "eval",
                overrides=[
                    f"estimator={estimator_name}",
                    f"proposal={proposal_name}",
                    f"seed={cfg.seed}",
                    "ckpt_path=unused",
                    "paths.output_dir=unused",
                ],
            )
            estimator, proposal = instantiate(choice.estimator), instantiate(choice.proposal)
            estimator.check(model, proposal)  # fail now, not after the other pairs have run
            # one line per estimator and the proposal it really uses: an estimator with a fixed
            # proposal, or AIS started from the prior, gives the same line for every proposal
            line = (estimator_name, estimator.proposal_for(model, proposal).name)
            if line not in lines:
                lines.add(line)
                pairs.append((estimator, proposal))
    rows: list[dict[str, Any]] = []
    for estimator, proposal in pairs:
        rows += convergence_rows(
            model,
            dataset,
            indices,
            estimator,
            proposal,
            list(cfg.ks),
            cfg.batch_size,
            device,
            datamodule.num_dims,
            progress=True,
        )
    output_dir = Path(cfg.paths.output_dir)
    write_table(rows, output_dir)
    plot_convergence(rows, output_dir / "convergence.png", f"{cfg.split} split, {count} examples")
    for row in rows:
        print(
            f"{row['estimator']:>10} {row['proposal']:>10} K={row['num_samples']:>6} "
            f"log p(x) = {figure(row['log_px_mean'], 3)} +- {figure(row['log_px_stderr'], 3)}  "
            + (
                grid_error_text(row)
                or f"ESS/K = {row['ess_mean']:.3g}  k-hat = {khat_text(row['khat_mean'])}"
            )
        )
    report_written(output_dir)
    return rows
