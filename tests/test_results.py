"""vaelik-results: several checkpoints measured the same way, one table (CSV and markdown)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from conftest import run_cli, run_cli_failing
from vaelik.checkpoint import read_checkpoint
from vaelik.cli import evaluate, results, train

MEASURE = [
    "split=val",
    "num_examples=10",
    "importance.num_samples=8",
    "ais_examples=3",
    "ais.num_samples=2",
    "ais.num_steps=3",
    "ais.leapfrog_steps=2",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("results") / "tiny_run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_cli(
            train.main,
            [
                "debug=fast",
                "logger=none",
                "latent_dim=3",
                "callbacks.log_likelihood.convergence_ks=null",
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={run_dir}",
            ],
            monkeypatch,
        )
    return run_dir / "checkpoints/last.ckpt"


def test_checkpoints_record_epochs_training_time_and_machine(checkpoint):
    saved = read_checkpoint(checkpoint)
    assert saved.epochs == 2 and saved.steps == 10
    assert 0 < saved.train_seconds < 600
    assert saved.machine and "threads" in saved.machine


def test_results_table_has_a_row_per_checkpoint(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "table"
    run_cli(
        results.main,
        [
            f"checkpoints={{named:{checkpoint},again:{checkpoint}}}",
            *MEASURE,
            f"hydra.run.dir={out}",
        ],
        monkeypatch,
    )
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model"] for r in rows] == ["named", "again"]
    for row in rows:
        assert math.isfinite(float(row["log_px"])) and float(row["log_px_stderr"]) > 0
        assert math.isfinite(float(row["ais_gap"])) and row["ais_examples"] == "3"
        assert row["epochs"] == "2" and float(row["train_hours"]) > 0
        assert row["num_examples"] == "10" and row["num_samples"] == "8"
    assert rows[0]["log_px"] == rows[1]["log_px"]  # the same checkpoint, the same noise
    markdown = (out / "results.md").read_text()
    assert "| named |" in markdown and "| again |" in markdown
    # the same figure as vaelik-eval with the same estimator on the same examples
    run_cli(
        evaluate.main,
        [
            f"ckpt_path={checkpoint}",
            "split=val",
            "num_examples=10",
            "estimator.num_samples=8",
            f"hydra.run.dir={tmp_path}/eval",
        ],
        monkeypatch,
    )
    summary = json.loads((tmp_path / "eval/summary.json").read_text())
    assert float(rows[0]["log_px"]) == pytest.approx(summary["log_px_mean"], rel=1e-9)


def test_a_missing_checkpoint_fails_before_any_evaluation(
    checkpoint, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "table"
    output = run_cli_failing(
        results.main,
        [f"checkpoints=[{checkpoint},{tmp_path}/nope.ckpt]", *MEASURE, f"hydra.run.dir={out}"],
        monkeypatch,
        capsys,
    )
    assert "nope.ckpt does not exist" in output
    assert not (out / "results.csv").exists()
