"""vaelik-results: several checkpoints measured the same way, one table (CSV and markdown)."""

from __future__ import annotations

import csv
import json
import math
import threading
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config, plan_for, run_cli, run_cli_failing
from models import tiny_bernoulli_vae
from vaelik.checkpoint import TRAIN_SECONDS_KEY, read_checkpoint
from vaelik.cli import evaluate, results, train
from vaelik.errors import ConfigError, UnsupportedCombinationError
from vaelik.evaluation import table
from vaelik.evaluation.curves import last_value, read_curve, trend
from vaelik.inference.plan import resolve
from vaelik.inference.proposals import EncoderProposal
from vaelik.models.factory import build_model
from vaelik.training.lit_module import VAELitModule

MEASURE = [
    "split=val",
    "num_examples=10",
    "importance.num_samples=8",
    "ais_examples=3",
    "ais.num_samples=2",
    "ais.num_steps=3",
    "ais.leapfrog_steps=2",
    "ais_proposal.steps=2",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("results") / "tiny_run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_cli(
            train.main,
            [
                "debug=fast",
                "logger=csv",
                "callbacks.log_likelihood.every_n_epochs=1",
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
    assert saved.machine and " thread" in saved.machine


@pytest.mark.slow
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
        # the trusted figure: AIS from the refined proposal, its mean over the 3 examples
        assert row["ais_start"] == "refined" and float(row["ais_log_px_stderr"]) > 0
        assert float(row["ais_log_px"]) < 0
        assert float(row["ais_disagree_share"]) in (0.0, 1 / 3, 2 / 3, 1.0)
        assert row["epochs"] == "2" and float(row["train_hours"]) > 0
        assert row["num_examples"] == "10" and row["num_samples"] == "8"
    assert rows[0]["log_px"] == rows[1]["log_px"]  # the same checkpoint, the same noise
    markdown = (out / "results.md").read_text()
    assert "| named |" in markdown and "| again |" in markdown
    # the end of the learning curve, from the run's CSV logs: val/log_px after epochs 0 and 1
    curve = list(csv.DictReader((out / "curves/named.csv").open()))
    assert [r["epoch"] for r in curve] == ["0", "1"]
    first, last = (float(r["val/log_px"]) for r in curve)
    assert float(rows[0]["val_log_px_last"]) == pytest.approx(last)
    assert float(rows[0]["val_log_px_trend"]) == pytest.approx((last - first) * 10)
    # a second table in the same folder adds its model and keeps the rows measured before
    run_cli(
        results.main,
        [f"checkpoints={{bmnist_vae:{checkpoint}}}", *MEASURE, f"hydra.run.dir={out}"],
        monkeypatch,
    )
    grown = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model"] for r in grown] == ["named", "again", "bmnist_vae"]
    assert grown[:2] == rows
    assert float(grown[2]["reference"]) == -88.56  # the paper's figure, from conf/results.yaml
    assert (
        "| bmnist_vae |" in (out / "results.md").read_text()
        and "-88.56" in (out / "results.md").read_text()
    )
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


def test_two_commands_writing_one_table_keep_each_others_rows(checkpoint, tmp_path, monkeypatch):
    """A second vaelik-results that finishes while the first is measuring: both rows are kept."""
    out = tmp_path / "table"
    original_measure = table.measure

    def measure_while_another_command_writes(name, path, settings):
        measured = original_measure(name, path, settings)
        other = dict(measured.row, model="written_meanwhile", log_px=-1.0)
        table.add_row(other, out)  # what a concurrent command does before this one writes
        return measured

    monkeypatch.setattr(results, "measure", measure_while_another_command_writes)
    run_cli(
        results.main,
        [f"checkpoints={{mine:{checkpoint}}}", *MEASURE, f"hydra.run.dir={out}"],
        monkeypatch,
    )
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model"] for r in rows] == ["written_meanwhile", "mine"]
    assert float(rows[0]["log_px"]) == -1.0 and float(rows[1]["log_px"]) < 0
    assert not list(out.glob("*.partial"))


@pytest.mark.slow
def test_the_ais_gap_is_measured_again_without_redoing_importance_sampling(
    checkpoint, tmp_path, monkeypatch
):
    """reuse_importance keeps the IS columns of the earlier row and measures the AIS gap alone;
    per-example streams make it the gap a whole new measurement gives."""
    whole, again = tmp_path / "whole", tmp_path / "again"
    first = [*MEASURE, "ais_examples=3"]
    for folder in (whole, again):
        run_cli(
            results.main,
            [f"checkpoints={{m:{checkpoint}}}", *first, f"hydra.run.dir={folder}"],
            monkeypatch,
        )
    measured_is = []
    original = table.estimate

    def counting(*args, **kwargs):
        measured_is.append(len(kwargs["examples"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(table, "estimate", counting)
    more_ais = [*MEASURE, "ais_examples=5", "ais.num_steps=4"]
    for folder, reuse in ((whole, "false"), (again, "true")):
        where = [f"hydra.run.dir={folder}"]
        run_cli(
            results.main,
            [f"checkpoints={{m:{checkpoint}}}", *more_ais, f"reuse_importance={reuse}", *where],
            monkeypatch,
        )
    assert measured_is == [10, 5, 5, 5]  # IS on all 10 examples, then only on the AIS subset
    (redone,), (reused,) = (
        list(csv.DictReader((f / "results.csv").open())) for f in (whole, again)
    )
    for column in ("log_px", "log_px_stderr", "bpd", "ais_gap", "ais_gap_stderr"):
        assert float(reused[column]) == pytest.approx(float(redone[column]), rel=1e-9), column
    assert reused["ais_examples"] == "5"
    assert float(reused["eval_seconds"]) < float(redone["eval_seconds"]) + 60
    # another K, split or seed is another measurement: IS is run again over every example
    where = [f"hydra.run.dir={again}"]
    for other in ("importance.num_samples=9", "split=test", "seed=1"):
        measured_is.clear()
        run_cli(
            results.main,
            [f"checkpoints={{m:{checkpoint}}}", *more_ais, other, "reuse_importance=true", *where],
            monkeypatch,
        )
        assert measured_is == [10, 5], other


def test_the_table_names_a_checkpoint_under_the_working_directory_relative_to_it(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "runs/a/checkpoints/best.ckpt"
    assert (
        table.recorded_path(Path("runs/a/checkpoints/best.ckpt")) == "runs/a/checkpoints/best.ckpt"
    )
    assert table.recorded_path(inside) == "runs/a/checkpoints/best.ckpt"
    elsewhere = tmp_path.parent / "other/best.ckpt"
    assert table.recorded_path(elsewhere) == str(elsewhere.resolve())


def test_a_second_writer_waits_for_the_table_lock(tmp_path):
    """While one command holds the lock, another's row waits; it is written once released."""
    row = dict.fromkeys(table.COLUMNS) | {
        "model": "waiting",
        "log_px": -1.0,
        "log_px_stderr": 0.1,
        "bpd": 0.5,
        "epochs": 1,
    }
    errors: list[BaseException] = []

    def add_row() -> None:
        try:
            table.add_row(row, tmp_path)
        except BaseException as error:  # a thread's exception would otherwise be lost
            errors.append(error)

    writer = threading.Thread(target=add_row)
    with table.exclusive_lock(tmp_path / ".results.lock"):
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive() and not (tmp_path / "results.csv").exists()
    writer.join(timeout=10)
    assert not errors
    assert [r["model"] for r in csv.DictReader((tmp_path / "results.csv").open())] == ["waiting"]
    assert "| waiting | -1.00 +- 0.10 |" in (tmp_path / "results.md").read_text()


def write_metrics(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "val/elbo", "val/log_px"])
        writer.writeheader()
        writer.writerows(rows)


def test_learning_curve_joins_a_resumed_runs_logs_and_measures_its_end(tmp_path):
    write_metrics(
        tmp_path / "csv/version_0/metrics.csv",
        [{"epoch": e, "step": e, "val/elbo": -100 + e} for e in range(4)]
        + [{"epoch": 0, "step": 0, "val/log_px": -95.0}, {"epoch": 3, "val/log_px": -94.0}],
    )
    # resumed from the checkpoint of epoch 2: epoch 3 is trained again, then 4 to 30
    write_metrics(
        tmp_path / "csv/version_1/metrics.csv",
        [{"epoch": e, "step": e, "val/elbo": -99 + e / 2} for e in range(3, 31)]
        + [{"epoch": e, "val/log_px": -94 + e / 10} for e in (10, 20, 30)],
    )
    curve = read_curve(tmp_path)
    assert list(curve) == list(range(31))
    assert curve[2] == {"val/elbo": -98.0}
    assert curve[3] == {"val/elbo": -97.5, "val/log_px": -94.0}  # version 1 replaces version 0
    assert last_value(curve, "val/log_px") == -91.0
    # over the last 20 epochs: epochs 10 -> 30, +2 nats of log p(x), +10 of the ELBO
    assert trend(curve, "val/log_px") == pytest.approx(1.0)
    assert trend(curve, "val/elbo") == pytest.approx(5.0)
    assert trend(curve, "val/log_px", window=100) == pytest.approx(4.0 * 10 / 30)  # from epoch 0
    assert trend(curve, "val/bpd") is None and read_curve(tmp_path / "no_logs") == {}


def test_the_learning_curve_records_the_train_validation_elbo_gap(tmp_path):
    path = tmp_path / "csv/version_0/metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text(
        "epoch,step,train/elbo_epoch,val/elbo\n"
        "0,9,-120.5,\n0,9,,-122.0\n1,19,-110.0,\n2,29,,-111.0\n"
    )
    curve = read_curve(tmp_path)
    assert curve[0] == {"train/elbo_epoch": -120.5, "val/elbo": -122.0, "train_val_elbo_gap": 1.5}
    assert "train_val_elbo_gap" not in curve[1] and "train_val_elbo_gap" not in curve[2]


def test_a_checkpoint_from_before_vaelik_counted_training_time_keeps_the_timers_count():
    module = VAELitModule(tiny_bernoulli_vae(), torch.optim.Adam, num_dims=4)
    module.on_load_checkpoint({"callbacks": {"Timer": {"time_elapsed": {"train": 2700.5}}}})
    assert module.training_seconds() == 2700.5
    module.on_load_checkpoint({TRAIN_SECONDS_KEY: 12.0, "callbacks": {}})
    assert module.training_seconds() == 12.0
    module.on_load_checkpoint({})
    assert module.training_seconds() == 0.0


@pytest.mark.parametrize(
    ("posterior", "choice", "start", "latent_dim"),
    [
        ("diagonal_gaussian", "auto", "encoder", 3),
        ("diagonal_gaussian", "auto", "prior", 2),  # low-dimensional: chains from the prior
        ("iaf", "auto", "prior", 3),  # an IAF guide cannot score latents it did not draw
        ("diagonal_gaussian", "prior", "prior", 3),
        ("diagonal_gaussian", "encoder", "encoder", 2),
        ("iaf", "encoder", "encoder", 3),  # asked for: AIS's own check then refuses it
    ],
)
def test_ais_starts_from_the_encoder_where_the_guide_can_score_else_from_the_prior(
    posterior, choice, start, latent_dim
):
    cfg = compose_config(
        "train",
        [
            f"posterior={posterior}",
            f"latent_dim={latent_dim}",
            "encoder.hidden=[8]",
            "decoder.hidden=[8]",
        ],
    )
    model = build_model(cfg, "binary")
    ais_cfg = {"_target_": "vaelik.inference.ais.AnnealedImportanceSampling", "num_samples": 2}
    ais = results.ais_with_start(OmegaConf.create(ais_cfg), choice)
    if posterior == "iaf" and start == "encoder":  # asked for: binding refuses it
        with pytest.raises(UnsupportedCombinationError, match="use proposal=prior"):
            plan_for(model, ais, EncoderProposal())
    else:
        assert plan_for(model, ais, EncoderProposal()).proposal.name == start
    with pytest.raises(ConfigError, match="ais_start must be auto, encoder or prior"):
        results.ais_with_start(OmegaConf.create(ais_cfg), "posterior")


@pytest.mark.parametrize(
    "overrides, used",
    [([], "refined"), (["posterior=iaf"], "encoder"), (["model=hvae"], "encoder")],
    ids=["diagonal gaussian", "iaf", "hierarchy"],
)
def test_the_table_s_ais_starts_refined_where_the_posterior_allows(overrides, used):
    cfg = compose_config(
        "train", ["latent_dim=3", "encoder.hidden=[8]", "decoder.hidden=[8]", *overrides]
    )
    model = build_model(cfg, "binary")
    settings = results.table_settings(compose_config("results", ["checkpoints=[unused]"]))
    proposal = settings.ais_proposal
    plan = resolve(model, "importance", proposal, fallback_to_encoder=True)
    assert plan.proposal.name == used
    assert any("not refined" in choice.reason for choice in plan.choices) == (used == "encoder")
    if used == "encoder":  # asked for without accepting the rules: refused, not replaced
        with pytest.raises(UnsupportedCombinationError, match="proposal=refined"):
            resolve(model, "importance", proposal)
