"""How far estimates are from an exact reference, per example: every estimator against the
exact answer, the table of docs/results.md.

Each input is the folder a ``vaelik-eval`` run wrote (``per_example.csv``, ``summary.json``). The
reference is typically ``estimator=quadrature`` on a model with a 1- or 2-D latent; every other
run is joined to it on the example index, and its error e_i = log p_hat(x_i) - log p(x_i)
(nats, negative = too low) is summarised: mean with its paired standard error sd(e) / sqrt(n),
median, best and worst, how many examples are more than a nat low, the share the run itself
flagged, and how many of the bad ones it flagged. The reference may also be another model
measured on the same examples (an ablation): the mean is then the change in log p(x) and its
standard error the paired one, free of the spread between examples.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vaelik.errors import ConfigError

#: an estimate this many nats below the reference counts as a miss
MISS_NATS = 1.0
#: the standard error of a mean over one example: undefined
NAN = float("nan")


@dataclass
class EvaluationRun:
    """One ``vaelik-eval`` output folder: its per-example estimates and summary."""

    name: str
    index: list[int]
    log_px: torch.Tensor  # [N] float64
    flagged: torch.Tensor  # [N] float64, 0 or 1
    summary: dict

    @classmethod
    def read(cls, folder: str | Path) -> EvaluationRun:
        folder = Path(folder)
        table, summary = folder / "per_example.csv", folder / "summary.json"
        if not table.is_file() or not summary.is_file():
            raise ConfigError(
                f"{folder} has no per_example.csv and summary.json: give the folder a "
                "vaelik-eval run wrote (its hydra.run.dir)"
            )
        with open(table, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return cls(
            name=folder.name,
            index=[int(row["index"]) for row in rows],
            log_px=torch.tensor([float(row["log_px"]) for row in rows], dtype=torch.float64),
            flagged=torch.tensor(
                [float(row.get("flagged") or 0) for row in rows], dtype=torch.float64
            ),
            summary=json.loads(summary.read_text()),
        )

    def at(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_px`` and ``flagged`` of the examples ``index``, in that order; a ConfigError
        names the first example this run did not evaluate."""
        position = {i: p for p, i in enumerate(self.index)}
        missing = [i for i in index if i not in position]
        if missing:
            raise ConfigError(
                f"run {self.name!r} has no estimate for example {missing[0]} (and "
                f"{len(missing) - 1} more) of the reference: evaluate the same split and "
                "num_examples"
            )
        rows = [position[i] for i in index]
        return self.log_px[rows], self.flagged[rows]

    @property
    def seconds_per_example(self) -> float:
        return float(self.summary["seconds"]) / len(self.index)


def accuracy_row(run: EvaluationRun, reference: EvaluationRun) -> dict[str, float | int | str]:
    """The errors of ``run`` against ``reference`` on the reference's examples."""
    log_px, flagged = run.at(reference.index)
    error = log_px - reference.log_px
    missed = error < -MISS_NATS
    return {
        "run": run.name,
        "estimator": f"{run.summary.get('estimator')}, {run.summary.get('proposal')}",
        "examples": len(reference.index),
        "mean_error": error.mean().item(),
        "mean_error_stderr": (error.std() / len(error) ** 0.5).item() if len(error) > 1 else NAN,
        "median_error": error.median().item(),
        "best_error": error.max().item(),
        "worst_error": error.min().item(),
        "missed": int(missed.sum()),
        "missed_and_flagged": int((missed & (flagged > 0)).sum()),
        "flagged_share": flagged.mean().item(),
        "seconds_per_example": run.seconds_per_example,
    }


def stderr_text(stderr: float) -> str:
    return "n/a" if stderr != stderr else f"{stderr:.3f}"


def accuracy_table(rows: list[dict], reference: EvaluationRun) -> str:
    """The rows as a markdown table, with the reference's own line under it."""
    lines = [
        "| run | estimator | mean minus reference | median | best / worst "
        f"| > {MISS_NATS:g} nat low (flagged) | flagged | s / example |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['estimator']} | {row['mean_error']:+.3f} "
            f"+- {stderr_text(row['mean_error_stderr'])} | "
            f"{row['median_error']:+.3f} | {row['best_error']:+.2f} / {row['worst_error']:+.2f} "
            f"| {row['missed']} ({row['missed_and_flagged']}) | {row['flagged_share']:.1%} | "
            f"{row['seconds_per_example']:.2f} |"
        )
    grid = reference.summary.get("grid_error_max")
    check = f", largest grid error {grid:.3f} nats" if grid is not None else ""
    lines.append(
        f"\nreference: {reference.name} ({reference.summary.get('estimator')}), "
        f"{len(reference.index)} examples, mean log p(x) "
        f"{reference.log_px.mean().item():.3f}{check}, "
        f"{reference.seconds_per_example:.2f} s / example"
    )
    return "\n".join(lines)


def write_rows(rows: list[dict], path: str | Path) -> Path:
    """The rows as a CSV file (one column per key of :func:`accuracy_row`), numbers to 3
    decimals (a thousandth of a nat, a millisecond)."""
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def plot_accuracy_against_time(
    rows: list[dict], reference: EvaluationRun, path: str | Path
) -> Path:
    """Accuracy per second as a PNG, over seconds per example on a log axis: on the left each
    run's mean error against the reference with its paired standard error (the band: within
    0.1 nat), on the right its worst example (the line: a nat low). Points are numbered in the
    order of ``rows``; the legend names them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (mean_axis, worst_axis) = plt.subplots(1, 2, figsize=(11, 4.8))
    for number, row in enumerate(rows, 1):
        second, error = row["seconds_per_example"], row["mean_error_stderr"]
        bar = 0.0 if error != error else error
        mean_axis.errorbar(
            second, row["mean_error"], yerr=bar, fmt="o", label=f"{number}: {row['run']}"
        )
        worst_axis.plot(second, row["worst_error"], "v")
        for axis, column in ((mean_axis, "mean_error"), (worst_axis, "worst_error")):
            axis.annotate(
                str(number),
                (second, row[column]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=8,
            )
    mean_axis.axhspan(-0.1, 0.1, color="tab:green", alpha=0.15)
    worst_axis.axhline(-1.0, color="tab:red", linewidth=0.8)
    for axis, what in ((mean_axis, "mean"), (worst_axis, "worst example")):
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("seconds per example (log scale)")
        axis.set_ylabel(f"{what}: log p(x) minus the reference (nats)")
        axis.grid(alpha=0.3)
    figure.suptitle(
        f"Accuracy per second against {reference.name} ({len(reference.index)} examples)"
    )
    figure.legend(loc="center right", fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0, 0.8, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
