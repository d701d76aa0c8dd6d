"""Write a training run's learning curve, one row per epoch, from the run's CSV logs.

A run's ``csv/version_<n>/metrics.csv`` files (Lightning's CSVLogger; a new version each time
the run is resumed with ``ckpt_path=last``) hold the validation metrics of every epoch. A resumed
run repeats the epochs after its last checkpoint, so where versions overlap the later version's
value wins. The result, columns ``epoch``, ``val/elbo`` and ``val/log_px`` (an empty cell where a
metric was not measured that epoch, as the callback measures log p(x) every few epochs), is the
curve file ``tools/draw_learning_curves.py`` draws:

    .venv/bin/python tools/export_learning_curve.py runs/bmnist_vampprior_paper \\
        docs/results/binarized_mnist/curves/bmnist_vampprior_paper.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

COLUMNS = ("val/elbo", "val/log_px")
VERSION = re.compile(r"version_(\d+)$")


def metric_files(run: Path) -> list[Path]:
    """The run's ``csv/version_<n>/metrics.csv`` files, oldest version first."""
    numbered = [
        (int(match.group(1)), folder)
        for folder in (run / "csv").glob("version_*")
        if (match := VERSION.search(folder.name))
    ]
    files = [folder / "metrics.csv" for _, folder in sorted(numbered)]
    files = [path for path in files if path.is_file()]
    if not files:
        raise FileNotFoundError(
            f"no csv/version_*/metrics.csv under {run}: give the run's folder (its hydra.run.dir), "
            "trained with the csv logger"
        )
    return files


def learning_curve(run: Path, columns: tuple[str, ...] = COLUMNS) -> dict[int, dict[str, float]]:
    """``{epoch: {column: value}}`` over all of the run's versions, a later version's value
    replacing an earlier one's for the same epoch and column. NaN values are kept out."""
    curve: dict[int, dict[str, float]] = {}
    for path in metric_files(run):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for column in columns:
                    cell = (row.get(column) or "").strip()
                    if cell and not math.isnan(value := float(cell)):
                        curve.setdefault(int(row["epoch"]), {})[column] = value
    if not curve:
        raise ValueError(f"{run}'s logs hold none of {', '.join(columns)}: no epoch was validated")
    return curve


def write_curve(
    curve: dict[int, dict[str, float]], path: Path, columns: tuple[str, ...] = COLUMNS
) -> None:
    """Write ``curve`` as CSV, one row per epoch in order, empty cells where not measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["epoch", *columns])
        for epoch in sorted(curve):
            values = curve[epoch]
            writer.writerow([epoch, *(repr(values[c]) if c in values else "" for c in columns)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's folder (its hydra.run.dir)")
    parser.add_argument("output", type=Path, help="the curve CSV to write")
    args = parser.parse_args(argv)
    curve = learning_curve(args.run)
    write_curve(curve, args.output)
    print(f"wrote {args.output}: epochs {min(curve)} to {max(curve)}")


if __name__ == "__main__":
    main()
