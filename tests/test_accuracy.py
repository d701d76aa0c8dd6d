"""Estimators held against an exact reference, from the folders vaelik-eval writes."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaelik.errors import ConfigError
from vaelik.evaluation.accuracy import (
    EvaluationRun,
    accuracy_row,
    accuracy_table,
    plot_accuracy_against_time,
    write_rows,
)
from vaelik.evaluation.estimate import write_results
from vaelik.evaluation.results import PerExampleResults

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder: Path, index, log_px, flagged, estimator: str, seconds: float) -> Path:
    """A run folder in vaelik-eval's own format (written by its own writer)."""
    n = len(index)
    nan = torch.full((n,), math.nan, dtype=torch.float64)
    results = PerExampleResults(
        index=torch.tensor(index),
        log_px=torch.tensor(log_px, dtype=torch.float64),
        mc_stderr=nan,
        ess=torch.ones(n, dtype=torch.float64),
        log_weight_var=torch.zeros(n, dtype=torch.float64),
        khat=nan,
        grid_error=nan,
        flagged=torch.tensor(flagged, dtype=torch.float64),
    )
    summary = {"estimator": estimator, "proposal": "encoder", "seconds": seconds}
    summary |= results.summary(num_dims=4)
    write_results(folder, results, summary)
    return folder


@pytest.fixture
def runs(tmp_path):
    exact = write_run(
        tmp_path / "exact", [3, 1, 2, 0], [-10.0, -11.0, -12.0, -13.0], [0] * 4, "quadrature", 8.0
    )
    # the same examples in another order, one of them 5 nats low (flagged) and one 1.5 low
    estimate = write_run(
        tmp_path / "is", [0, 1, 2, 3], [-13.1, -16.0, -13.5, -9.9], [0, 1, 0, 0], "importance", 2.0
    )
    return exact, estimate


def test_errors_are_joined_on_the_example_index(runs):
    exact, estimate = (EvaluationRun.read(folder) for folder in runs)
    row = accuracy_row(estimate, exact)
    # errors by example: 0: -0.1, 1: -5.0, 2: -1.5, 3: +0.1
    assert row["mean_error"] == pytest.approx(-6.5 / 4)
    # paired standard error: the sample standard deviation of the errors over sqrt(4)
    assert row["mean_error_stderr"] == pytest.approx((16.7075 / 3) ** 0.5 / 2)
    assert row["median_error"] == pytest.approx(-1.5)  # torch's median: the lower middle value
    assert (row["best_error"], row["worst_error"]) == pytest.approx((0.1, -5.0))
    assert (row["missed"], row["missed_and_flagged"]) == (2, 1)
    assert row["flagged_share"] == 0.25 and row["seconds_per_example"] == 0.5
    table = accuracy_table([row], exact)
    row_line = (
        "| is | importance, encoder | -1.625 +- 1.180 | -1.500 | +0.10 / -5.00 | 2 (1) | 25.0% |"
    )
    assert row_line in table
    assert "4 examples, mean log p(x) -11.500" in table


def test_a_run_missing_a_reference_example_is_named(runs, tmp_path):
    exact = EvaluationRun.read(runs[0])
    short = write_run(tmp_path / "short", [0, 1], [-1.0, -2.0], [0, 0], "ais", 1.0)
    missing = r"run 'short' has no estimate for example 2 \(and 1 more\)"
    with pytest.raises(ConfigError, match=missing):
        accuracy_row(EvaluationRun.read(short), exact)
    with pytest.raises(ConfigError, match="no per_example.csv and summary.json"):
        EvaluationRun.read(tmp_path / "nowhere")


@pytest.mark.slow
def test_the_script_prints_the_table(runs, tmp_path):
    out = tmp_path / "rows.json"
    printed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "estimator_accuracy.py"),
            "--reference",
            str(runs[0]),
            str(runs[1]),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| is | importance, encoder | -1.625 +- 1.180 |" in printed
    assert '"missed": 2' in out.read_text()


def test_rows_are_written_as_csv_and_drawn_against_time(runs, tmp_path):
    exact, estimate = (EvaluationRun.read(folder) for folder in runs)
    faster = write_run(tmp_path / "fast", [0, 1, 2, 3], [-13.0] * 4, [0] * 4, "importance", 0.4)
    rows = [accuracy_row(estimate, exact), accuracy_row(EvaluationRun.read(faster), exact)]
    written = write_rows(rows, tmp_path / "rows.csv")
    with open(written, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [row["run"] for row in read] == ["is", "fast"]
    assert float(read[0]["mean_error"]) == pytest.approx(-1.625)
    picture = plot_accuracy_against_time(rows, exact, tmp_path / "accuracy.png")
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
