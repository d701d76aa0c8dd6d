"""Paired comparisons of stored evaluations: "B beats A by 0.31 +- 0.04 nats on the same images".

Two evaluations of the same split (``vaelik-eval`` run folders: ``per_example.csv`` and
``summary.json``) are compared on the examples both have. With d_i = log p_B(x_i) - log
p_A(x_i) over those n examples:

- ``difference`` = mean d_i;
- ``difference_stderr`` = std(d) / sqrt(n), the paired standard error: the variation between
  images that both models share cancels, so it is usually far smaller than
- ``unpaired_stderr`` = sqrt(var(log p_A) / n + var(log p_B) / n), what two independent
  samples of images would give (shown beside it);
- ``num_beyond_mc_error``: the examples where |d_i| exceeds their combined Monte Carlo error
  sqrt(se_A,i^2 + se_B,i^2) (where both estimates have one): the estimators themselves, not
  the images, then separate the two.

Typed functions only: :func:`read_evaluation` reads a folder, :func:`compare` returns the pairs,
:func:`write_comparison` writes ``comparison.json``, ``comparison.md`` and the plots.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelik.errors import ConfigError


@dataclass(frozen=True)
class Evaluation:
    """One stored evaluation: its name, its split (None where it does not say) and its
    per-example ``index``, ``log_px`` and ``mc_stderr`` (``[N]``, float64, by index)."""

    name: str
    split: str | None
    index: torch.Tensor
    log_px: torch.Tensor
    mc_stderr: torch.Tensor


def read_evaluation(folder: str | Path, name: str | None = None) -> Evaluation:
    """The evaluation written in ``folder`` (``per_example.csv``, ``summary.json``), named
    ``name`` (default: the folder's name)."""
    path = Path(folder)
    table = path / "per_example.csv"
    if not table.is_file():
        raise ConfigError(
            f"{path} holds no per_example.csv: give the run folders of vaelik-eval runs "
            "(runs=[DIR_A,DIR_B])"
        )
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "log_px" not in rows[0] or "index" not in rows[0]:
        raise ConfigError(f"{table} has no rows with index and log_px: it is not an evaluation")
    order = sorted(rows, key=lambda row: int(row["index"]))
    return Evaluation(
        name=name or path.name,
        split=summary.get("split"),
        index=torch.tensor([int(row["index"]) for row in order]),
        log_px=torch.tensor([float(row["log_px"]) for row in order], dtype=torch.float64),
        mc_stderr=torch.tensor(
            [float(row.get("mc_stderr") or "nan") for row in order], dtype=torch.float64
        ),
    )


def compare_pair(a: Evaluation, b: Evaluation) -> dict[str, Any]:
    """B against A on the examples both have (see the module docstring for every figure)."""
    if a.split is not None and b.split is not None and a.split != b.split:
        raise ConfigError(
            f"{a.name} is on the {a.split} split and {b.name} on the {b.split} split: compare "
            "evaluations of one split"
        )
    common = sorted(set(a.index.tolist()) & set(b.index.tolist()))
    if not common:
        raise ConfigError(
            f"{a.name} and {b.name} have no example in common: evaluate both on the same "
            "examples (the same num_examples, split and data)"
        )
    pick_a = {int(i): p for p, i in enumerate(a.index.tolist())}
    pick_b = {int(i): p for p, i in enumerate(b.index.tolist())}
    rows_a = torch.tensor([pick_a[i] for i in common])
    rows_b = torch.tensor([pick_b[i] for i in common])
    log_a, log_b = a.log_px[rows_a], b.log_px[rows_b]
    differences = log_b - log_a
    n = len(common)
    spread = differences.std().item() if n > 1 else math.nan
    unpaired = math.sqrt((log_a.var().item() + log_b.var().item()) / n) if n > 1 else math.nan
    mc_error = (a.mc_stderr[rows_a] ** 2 + b.mc_stderr[rows_b] ** 2).sqrt()
    return {
        "a": a.name,
        "b": b.name,
        "split": a.split or b.split,
        "num_examples": n,
        "difference": differences.mean().item(),
        "difference_stderr": spread / math.sqrt(n),
        "unpaired_stderr": unpaired,
        "num_beyond_mc_error": int((differences.abs() > mc_error).sum()),  # NaN: not counted
        "differences": differences,
        "log_px_a": log_a,
        "log_px_b": log_b,
    }


def compare(evaluations: list[Evaluation]) -> list[dict[str, Any]]:
    """Every pair (A before B in the order given) of two or more evaluations."""
    if len(evaluations) < 2:
        raise ConfigError("a comparison needs two or more evaluations: runs=[DIR_A,DIR_B,...]")
    names = [e.name for e in evaluations]
    if len(set(names)) != len(names):
        raise ConfigError(f"two evaluations are named alike ({names}): name them apart")
    return [compare_pair(a, b) for a, b in itertools.combinations(evaluations, 2)]


#: the per-pair figures written to comparison.json
FIGURES = (
    "a",
    "b",
    "split",
    "num_examples",
    "difference",
    "difference_stderr",
    "unpaired_stderr",
    "num_beyond_mc_error",
)


def comparison_text(pair: dict[str, Any]) -> str:
    """One line for a person."""
    return (
        f"{pair['b']} - {pair['a']}: {pair['difference']:+.3f} +- "
        f"{pair['difference_stderr']:.3f} nats paired (unpaired +- "
        f"{pair['unpaired_stderr']:.3f}) on {pair['num_examples']} examples; "
        f"{pair['num_beyond_mc_error']} differ by more than their Monte Carlo error"
    )


def write_comparison(pairs: list[dict[str, Any]], folder: str | Path) -> Path:
    """``comparison.json`` (:data:`FIGURES` per pair), ``comparison.md`` and, per pair, a
    scatter plot of the per-example values and a histogram of their differences
    (``<b>_vs_<a>.png``) in ``folder``."""
    output = Path(folder)
    output.mkdir(parents=True, exist_ok=True)
    figures = [{key: pair[key] for key in FIGURES} for pair in pairs]
    (output / "comparison.json").write_text(json.dumps(figures, indent=2))
    lines = [
        "| B - A | difference (nats) | paired stderr | unpaired stderr | examples "
        "| beyond MC error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {p['b']} - {p['a']} | {p['difference']:+.3f} | {p['difference_stderr']:.3f} "
        f"| {p['unpaired_stderr']:.3f} | {p['num_examples']} | {p['num_beyond_mc_error']} |"
        for p in pairs
    ]
    (output / "comparison.md").write_text("\n".join(lines) + "\n")
    for pair in pairs:
        plot_pair(pair, output / f"{pair['b']}_vs_{pair['a']}.png")
    return output


def plot_pair(pair: dict[str, Any], path: Path) -> None:
    """Per-example log p(x) of B against A (the diagonal: equal), and the histogram of the
    differences with their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (scatter, histogram) = plt.subplots(1, 2, figsize=(10, 4.2))
    a, b = pair["log_px_a"].numpy(), pair["log_px_b"].numpy()
    scatter.scatter(a, b, s=6, alpha=0.5)
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    scatter.plot([low, high], [low, high], color="gray", linewidth=1)
    scatter.set_xlabel(f"log p(x), {pair['a']} (nats)")
    scatter.set_ylabel(f"log p(x), {pair['b']} (nats)")
    histogram.hist(pair["differences"].numpy(), bins=40)
    histogram.axvline(pair["difference"], color="black", linewidth=1)
    histogram.set_xlabel(f"{pair['b']} - {pair['a']} per example (nats)")
    histogram.set_title(
        f"{pair['difference']:+.3f} +- {pair['difference_stderr']:.3f} nats "
        f"({pair['num_examples']} examples)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
