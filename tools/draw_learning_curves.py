"""Draw the learning curves of the results pages from their CSV files.

Every ``docs/results/<folder>/curves/<model>.csv`` (columns ``epoch``, ``val/log_px`` and,
optionally, ``train_val_elbo_gap``; an empty cell is a point not measured) becomes one line of
``docs/results/<folder>/learning_curves.png``: validation log p(x) against epoch, one line per
model, and beside it the train/validation ELBO gap where the files record it. The output is
deterministic (Agg backend, fixed size and fonts, no software or date in the PNG's metadata), so
the PNG changes only when a CSV does.

    .venv/bin/python tools/draw_learning_curves.py
    .venv/bin/python tools/draw_learning_curves.py --docs docs --output /tmp/curves
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
LOG_PX = "val/log_px"
GAP = "train_val_elbo_gap"
FILE_NAME = "learning_curves.png"
#: the gap panel starts here: in the first epochs an epoch's mean training ELBO lags far behind
#: the model that ends it (tens of nats below the validation ELBO), which would flatten the rest
GAP_FROM_EPOCH = 9
#: a curve with more points than this is drawn as a plain line (markers would merge)
MARKED_POINTS = 40


def read_curve(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(epoch, value), ...]}`` for every column but ``epoch``, empty cells left out."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [name for name in (rows[0].keys() if rows else ()) if name != "epoch"]
    return {
        column: [(int(row["epoch"]), float(row[column])) for row in rows if row[column].strip()]
        for column in columns
    }


def curve_folders(docs: Path) -> list[Path]:
    """Every ``results/*/curves`` folder under ``docs`` holding at least one CSV, sorted."""
    return sorted(
        folder for folder in (docs / "results").glob("*/curves") if any(folder.glob("*.csv"))
    )


def colours(models) -> dict[str, str]:
    """One colour per model, the same in every panel (matplotlib's cycle ``C0``..``C9``)."""
    return {model: f"C{number % 10}" for number, model in enumerate(models)}


def figure(curves: dict[str, dict[str, list[tuple[int, float]]]], title: str):
    """Validation log p(x) against epoch, and beside it the train/validation ELBO gap (from
    epoch :data:`GAP_FROM_EPOCH`) if any curve has it; a model keeps its colour in both panels,
    whichever curves lack the gap."""
    with_gap = any(curve.get(GAP) for curve in curves.values())
    colour = colours(curves)
    fig, axes = plt.subplots(
        1, 2 if with_gap else 1, figsize=(11 if with_gap else 6.5, 4.2), squeeze=False
    )
    panels = [(axes[0][0], LOG_PX, "validation log p(x) (nats)")]
    if with_gap:
        panels.append((axes[0][1], GAP, "train ELBO - validation ELBO (nats)"))
    for axis, column, label in panels:
        for model, curve in curves.items():
            points = curve.get(column, [])
            if column == GAP:
                points = [(epoch, value) for epoch, value in points if epoch >= GAP_FROM_EPOCH]
            if points:
                epochs, values = zip(*points, strict=True)
                marker = "o" if len(points) <= MARKED_POINTS else None
                axis.plot(
                    epochs, values, marker=marker, markersize=3, label=model, color=colour[model]
                )
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path, title: str) -> None:
    """Write :func:`figure` of ``curves`` as a PNG at ``path``."""
    with plt.style.context("default"):
        fig = figure(curves, title)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, metadata={"Software": None})
        plt.close(fig)


def draw_all(docs: Path, output: Path | None = None) -> list[Path]:
    """Draw a PNG for every curves folder under ``docs``; return the paths written. With
    ``output``, the PNGs go to ``output/<folder relative to docs>/`` instead of beside the
    CSVs."""
    written = []
    for folder in curve_folders(docs):
        results = folder.parent
        curves = {path.stem: read_curve(path) for path in sorted(folder.glob("*.csv"))}
        target = (output / results.relative_to(docs) if output else results) / FILE_NAME
        draw(curves, target, f"{results.name}: learning curves")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="the docs folder")
    parser.add_argument(
        "--output", type=Path, default=None, help="write here instead of beside the CSVs"
    )
    args = parser.parse_args(argv)
    for path in draw_all(args.docs, args.output):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
