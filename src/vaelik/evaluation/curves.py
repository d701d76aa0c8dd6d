"""A run's learning curve, read back from its CSV logs, and what its end says about more epochs.

Lightning's ``CSVLogger`` writes ``<run>/csv/version_N/metrics.csv``, one row per logging call
with the metrics logged then. A resumed run adds a version that starts again at the checkpoint's
epoch, so the curve joins the versions in order and a later version's value replaces an earlier
one for the same epoch (epochs trained after the last checkpoint and then lost are not shown).

The trend is the slope of a metric over the last ``window`` epochs of its measurements, in units
per 10 epochs: (m(e_last) - m(e_first)) * 10 / (e_last - e_first), where e_first is the earliest
measured epoch at least ``e_last - window``. The callback measures ``val/log_px`` on the same
examples with the same seed every time, so the difference is much less noisy than either figure.

The overfitting gap of an epoch is ``train_val_elbo_gap = train/elbo_epoch - val/elbo``: the mean
training ELBO over the epoch's steps (the ELBO itself, not the loss a KL warm-up weights) minus
the ELBO of the validation set after it, in nats; it grows when the model fits the training
images better than unseen ones.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

TRAIN_ELBO = "train/elbo_epoch"
GAP = "train_val_elbo_gap"
CURVE_METRICS = ("val/elbo", "val/log_px", TRAIN_ELBO)


def read_curve(
    run_dir: Path, metrics: tuple[str, ...] = CURVE_METRICS
) -> dict[int, dict[str, float]]:
    """``{epoch: {metric: value}}`` from every ``csv/version_*/metrics.csv`` under ``run_dir``,
    epochs in increasing order, with the ELBO gap where an epoch has both ELBOs (see the
    module's docstring); empty when the run kept no CSV logs."""
    curve: dict[int, dict[str, float]] = {}
    versions = sorted(
        Path(run_dir).glob("csv/version_*/metrics.csv"),
        key=lambda path: int(path.parent.name.removeprefix("version_")),
    )
    for path in versions:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                for metric in metrics:
                    if row.get(metric):
                        curve.setdefault(epoch, {})[metric] = float(row[metric])
    for values in curve.values():
        if TRAIN_ELBO in values and "val/elbo" in values:
            values[GAP] = values[TRAIN_ELBO] - values["val/elbo"]
    return dict(sorted(curve.items()))


def trend(curve: dict[int, dict[str, float]], metric: str, window: int = 20) -> float | None:
    """The change of ``metric`` per 10 epochs over its last ``window`` epochs of measurements
    (see the module's docstring); None with fewer than two measurements in that window."""
    points = [(epoch, values[metric]) for epoch, values in curve.items() if metric in values]
    if len(points) < 2:
        return None
    last_epoch, last_value = points[-1]
    first_epoch, first_value = next(p for p in points if p[0] >= last_epoch - window)
    if first_epoch == last_epoch:
        return None
    return (last_value - first_value) * 10 / (last_epoch - first_epoch)


def last_value(curve: dict[int, dict[str, float]], metric: str) -> float | None:
    """The latest measurement of ``metric``, or None."""
    values = [values[metric] for values in curve.values() if metric in values]
    return values[-1] if values else None


def write_curve(curve: dict[int, dict[str, float]], path: Path) -> None:
    """The curve as a CSV file: ``epoch`` then one column per metric (empty where unmeasured)."""
    metrics = sorted({metric for values in curve.values() for metric in values})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *metrics])
        for epoch, values in curve.items():
            writer.writerow([epoch, *(_cell(values.get(metric)) for metric in metrics)])


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(value)
