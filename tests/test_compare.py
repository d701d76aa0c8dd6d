"""vaelik-compare: paired differences between stored evaluations, checked by hand."""

from __future__ import annotations

import csv
import json
import math

import pytest

from conftest import run_cli, run_cli_failing, user_error
from vaelik.cli import compare as compare_cli
from vaelik.errors import ConfigError
from vaelik.evaluation.comparison import compare, read_evaluation


def write_run(folder, index, log_px, mc_stderr, split="test"):
    folder.mkdir(parents=True)
    with open(folder / "per_example.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "log_px", "mc_stderr", "ess"])
        for row in zip(index, log_px, mc_stderr, [0.5] * len(index), strict=True):
            writer.writerow(row)
    (folder / "summary.json").write_text(json.dumps({"split": split}))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    a = write_run(tmp_path / "a", [3, 0, 1, 2], [-88, -90, -91, -92], [1.0, 0.3, 0.3, 0.3])
    b = write_run(
        tmp_path / "b",
        [0, 1, 2, 3, 7],
        [-89.5, -90.0, -92.5, -87.0, -50.0],
        [0.3, 0.3, 0.3, 0.5, 0.3],
    )
    return a, b


def test_the_paired_figures_are_the_hand_computed_ones(two_runs):
    a, b = two_runs
    (pair,) = compare([read_evaluation(a), read_evaluation(b)])
    # the four common examples 0..3: d = B - A = [0.5, 1.0, -0.5, 1.0]
    assert pair["num_examples"] == 4
    assert pair["difference"] == pytest.approx(0.5)
    # sample std of d: sqrt((0 + 0.25 + 1 + 0.25) / 3) = sqrt(0.5), over sqrt(4)
    assert pair["difference_stderr"] == pytest.approx(math.sqrt(0.5) / 2)
    # var(A) = 8.75 / 3, var(B) = 15.25 / 3: sqrt((8.75 + 15.25) / 3 / 4) = sqrt(2)
    assert pair["unpaired_stderr"] == pytest.approx(math.sqrt(2))
    # |d| against sqrt(se_a^2 + se_b^2): 0.42 for the first three, sqrt(1.25) for example 3
    assert pair["num_beyond_mc_error"] == 3


def test_vaelik_compare_writes_and_prints_the_comparison(two_runs, tmp_path, monkeypatch, capsys):
    a, b = two_runs
    out = tmp_path / "out"
    run_cli(compare_cli.main, [f"runs={{base:{a},new:{b}}}", f"hydra.run.dir={out}"], monkeypatch)
    (figures,) = json.loads((out / "comparison.json").read_text())
    assert figures["a"] == "base" and figures["b"] == "new"
    for key in ("difference", "difference_stderr", "unpaired_stderr", "num_examples"):
        assert key in figures
    assert "| new - base | +0.500 | 0.354 | 1.414 | 4 | 3 |" in (out / "comparison.md").read_text()
    assert (out / "new_vs_base.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "new - base: +0.500 +- 0.354 nats paired (unpaired +- 1.414) on 4 examples" in printed


def test_other_splits_or_no_common_example_are_refused(two_runs, tmp_path, monkeypatch, capsys):
    a, _ = two_runs
    val = write_run(tmp_path / "val", [0, 1], [-1.0, -2.0], [0.1, 0.1], split="val")
    apart = write_run(tmp_path / "apart", [10, 11], [-1.0, -2.0], [0.1, 0.1])
    for other, message in (
        (val, "on the test split and val on the val split"),
        (apart, "no example in common"),
    ):
        output = run_cli_failing(
            compare_cli.main,
            [f"runs=[{a},{other}]", f"hydra.run.dir={tmp_path / 'x'}"],
            monkeypatch,
            capsys,
        )
        assert message in user_error(output)
    with pytest.raises(ConfigError, match="needs two or more evaluations"):
        compare([read_evaluation(a)])
    with pytest.raises(ConfigError, match="holds no per_example.csv"):
        read_evaluation(tmp_path)
