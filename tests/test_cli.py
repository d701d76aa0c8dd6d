"""The command-line entry points end to end: train, evaluate from the checkpoint, clear failures."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch
import pytest
import torch

from conftest import run_cli, run_cli_failing, user_error
from vaelik.cli import USER_ERROR_EXIT, bdmc, convergence, evaluate, train
from vaelik.errors import ConfigError
from vaelik.progress import PlainProgress, clock
from vaelik.training.fit import warn_if_unbounded

FAST = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.enable_model_summary=false",
    "callbacks.log_likelihood.num_examples=30",
    "callbacks.log_likelihood.num_samples=16",
    "data.source.val_size=60",
    "data.source.test_size=40",
]


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One short training run through the real console script (a fresh process)."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    script = Path(sys.executable).with_name("vaelik-train")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vaelik.cli.train"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(
        [*command, *FAST, "trainer.enable_model_summary=true", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir.parent / "stdout.txt").write_text(result.stdout)
    (run_dir.parent / "stderr.txt").write_text(result.stderr)
    return run_dir


@pytest.mark.slow
def test_train_prints_what_a_user_needs_and_nothing_else(trained_run):
    out = (trained_run.parent / "stdout.txt").read_text()
    printed = out + (trained_run.parent / "stderr.txt").read_text()
    assert "model.decoder" in printed and "parameters (" in printed  # the model summary
    # not a terminal: a line per epoch, with the metrics a bar would show
    assert re.search(r"^epoch 2/2 \(\d+ s\): .*val/log_px -\d+\.\d", out, re.M)
    # each line shows its own epoch's training loss (the last one: the final metrics')
    printed_loss = re.search(r"^epoch 2/2 .*train/loss_epoch (\d+\.?\d*)", out, re.M)
    final = json.loads((trained_run / "metrics.json").read_text())["train/loss_epoch"]
    assert printed_loss and float(printed_loss.group(1)) == pytest.approx(final, rel=2e-3)
    assert out.rstrip().endswith(f"wrote results to {trained_run}")
    for noise in ("Tip", "FLOPs", "v_num", "not writable", "Trainer already configured"):
        assert noise not in printed, noise


def test_train_writes_config_checkpoints_images_and_metrics(trained_run):
    for name in (
        "config.yaml",
        "checkpoints/last.ckpt",
        "samples.png",
        "reconstructions.png",
        "metrics.json",
    ):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "checkpoints").glob("best-epoch*.ckpt"))
    with open(next(trained_run.glob("csv/version_*/metrics.csv"))) as handle:
        columns = csv.DictReader(handle).fieldnames
    assert {"val/elbo", "val/log_px", "val/bpd", "val/ess"} <= set(columns)


def test_callback_metrics_are_finite_and_consistent(trained_run):
    metrics = read_metrics(trained_run)
    for key in ("val/elbo", "val/log_px", "val/bpd", "val/ess"):
        assert math.isfinite(metrics[key]), key
    assert metrics["val/bpd"] == pytest.approx(
        -metrics["val/log_px"] / (784 * math.log(2)), rel=1e-5
    )
    assert 0 < metrics["val/ess"] <= 1
    assert 0 <= metrics["val/flagged"] <= 1
    assert metrics["val/log_px"] < 0


def test_checkpoint_carries_the_resolved_config(trained_run):
    ckpt = torch.load(trained_run / "checkpoints/last.ckpt", weights_only=True)
    config = ckpt["vaelik_config"]
    assert config["data"]["source"]["_target_"] == "vaelik.data.EmbeddedMNIST"
    assert config["decoder"]["out_shape"] == [1, 28, 28]


def test_eval_from_checkpoint_writes_table_and_summary(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    run_cli(
        evaluate.main,
        [
            f"ckpt_path={trained_run}/checkpoints/last.ckpt",
            "estimator.num_samples=50",
            "estimator.chunk_size=7",
            "num_examples=25",
            "batch_size=10",
            f"hydra.run.dir={out}",
        ],
        monkeypatch,
    )
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "log_px_mean",
        "log_px_stderr",
        "bpd",
        "num_examples",
        "num_samples",
        "estimator",
        "proposal",
        "ess_mean",
        "seconds",
    ):
        assert key in summary, key
    assert (summary["num_examples"], summary["num_samples"]) == (25, 50)
    assert (summary["estimator"], summary["proposal"]) == ("importance", "encoder")
    with open(out / "per_example.csv") as handle:
        rows = list(csv.DictReader(handle))
    # 25 of the 40 test examples, spread over the split (a file may be sorted by class)
    assert [int(r["index"]) for r in rows] == [i * 40 // 25 for i in range(25)]
    log_px = torch.tensor([float(r["log_px"]) for r in rows], dtype=torch.float64)
    assert summary["log_px_mean"] == pytest.approx(log_px.mean().item(), rel=1e-9)
    assert summary["log_px_stderr"] == pytest.approx(log_px.std().item() / 5, rel=1e-9)
    # printed for a person: rounded figures, a progress bar over the examples, where it wrote
    printed = capsys.readouterr()
    mean, stderr = round(summary["log_px_mean"], 2), round(summary["log_px_stderr"], 2)
    assert f"log p(x) = {mean:.2f} +- {stderr:.2f} nats" in printed.out
    assert "k-hat median" in printed.out and f"wrote results to {out}" in printed.out
    flagged = f"flagged: {100 * summary['flagged_share']:.1f}% (k-hat > 0.7)"
    assert flagged in printed.out and summary["flag_rule"] == "k-hat > 0.7"
    assert summary["flagged_share"] == summary["khat_share_above_0.7"]
    assert "25/25 examples" in printed.err


def test_eval_run_again_reuses_the_store_s_rows(trained_run, tmp_path, monkeypatch, capsys):
    """The same command run again computes nothing: every row comes from the results store,
    and per_example.csv is the first run's, byte for byte."""
    argv = [
        f"ckpt_path={trained_run}/checkpoints/last.ckpt",
        "estimator.num_samples=20",
        "num_examples=20",
        f"store={tmp_path / 'store.sqlite'}",
    ]
    run_cli(evaluate.main, [*argv, "batch_size=16", f"hydra.run.dir={tmp_path / 'a'}"], monkeypatch)
    first = capsys.readouterr().out
    assert "0 of 20 examples reused" in first
    run_cli(evaluate.main, [*argv, "batch_size=5", f"hydra.run.dir={tmp_path / 'b'}"], monkeypatch)
    again = capsys.readouterr()
    assert "20 of 20 examples reused" in again.out and "20 from the store" in again.err
    table = (tmp_path / "a" / "per_example.csv").read_bytes()
    assert (tmp_path / "b" / "per_example.csv").read_bytes() == table
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["reused"] == 20 and summary["store"] == str(tmp_path / "store.sqlite")


def test_eval_shards_write_their_own_stores_and_the_whole_run_merges_them(
    trained_run, tmp_path, monkeypatch, capsys
):
    """shard=I/N: disjoint parts into files of their own; the command without shard merges
    them by union and computes nothing; the result is the one-process run's, bit for bit."""
    store = tmp_path / "store.sqlite"
    argv = [
        f"ckpt_path={trained_run}/checkpoints/last.ckpt",
        "estimator.num_samples=10",
        "num_examples=30",
        f"store={store}",
    ]
    for part in ("0/3", "1/3", "2/3", "1/3"):  # the second 1/3: run twice, no duplicates
        run_cli(
            evaluate.main, [*argv, f"shard={part}", f"hydra.run.dir={tmp_path / 's'}"], monkeypatch
        )
    assert sorted(p.name for p in tmp_path.glob("store.shard-*")) == [
        f"store.shard-{i}-of-3.sqlite" for i in range(3)
    ]
    capsys.readouterr()
    run_cli(evaluate.main, [*argv, f"hydra.run.dir={tmp_path / 'whole'}"], monkeypatch)
    assert "30 of 30 examples reused" in capsys.readouterr().out
    alone = [*argv[:-1], "store=null", f"hydra.run.dir={tmp_path / 'alone'}"]
    run_cli(evaluate.main, alone, monkeypatch)
    merged = (tmp_path / "whole" / "per_example.csv").read_bytes()
    assert merged == (tmp_path / "alone" / "per_example.csv").read_bytes()
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 30
    output = run_cli_failing(evaluate.main, [*argv, "shard=3/3"], monkeypatch, capsys)
    assert "shard=3/3 is not I/N with 0 <= I < N" in user_error(output)


@pytest.mark.parametrize(
    ("choices", "reported"),
    [
        (["proposal=student_t", "proposal.df=3"], ("importance", "student_t")),
        (["proposal=defensive"], ("importance", "defensive")),
        (["estimator=prior"], ("prior", "prior")),
        (["estimator=ais", "estimator.num_steps=5", "estimator.num_samples=4"], ("ais", "encoder")),
    ],
)
def test_eval_with_other_estimators_and_proposals(
    trained_run, tmp_path, monkeypatch, choices, reported
):
    out = tmp_path / "eval"
    run_cli(
        evaluate.main,
        [
            f"ckpt_path={trained_run}/checkpoints/last.ckpt",
            "estimator.num_samples=30",
            *choices,
            "num_examples=6",
            "split=val",
            f"hydra.run.dir={out}",
        ],
        monkeypatch,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["estimator"], summary["proposal"]) == reported
    assert math.isfinite(summary["log_px_mean"]) and summary["num_examples"] == 6


@pytest.mark.slow
def test_eval_by_quadrature_on_a_two_dimensional_latent(tmp_path, monkeypatch, capsys):
    """estimator=quadrature end to end: exact log p(x) with its grid check, per example."""
    run = tmp_path / "run"
    run_cli(train.main, [*FAST, "latent_dim=2", f"hydra.run.dir={run}"], monkeypatch)
    out = tmp_path / "eval"
    argv = [f"ckpt_path={run}/checkpoints/last.ckpt", "estimator=quadrature", "num_examples=4"]
    run_cli(evaluate.main, [*argv, "estimator.points=100", f"hydra.run.dir={out}"], monkeypatch)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["estimator"], summary["proposal"]) == ("quadrature", "uniform_box")
    assert summary["num_samples"] == 100**2 and summary["khat_median"] is None
    with open(out / "per_example.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert max(float(r["grid_error"]) for r in rows) == pytest.approx(summary["grid_error_max"])
    assert f"grid error at most {summary['grid_error_max']:.2g} nats" in capsys.readouterr().out
    # in a convergence table it is the flat reference line that importance sampling approaches
    conv = tmp_path / "conv"
    run_cli(
        convergence.main,
        [
            f"ckpt_path={run}/checkpoints/last.ckpt",
            "ks=[1,3000]",
            "num_examples=4",
            "estimators=[quadrature,prior]",
            "proposals=[encoder,inflated]",  # both estimators fix their own: one line each
            "batch_size=4",
            f"hydra.run.dir={conv}",
        ],
        monkeypatch,
    )
    listed = json.loads((conv / "convergence.json").read_text())
    rows = {(r["estimator"], r["num_samples"]): r for r in listed}
    assert len(listed) == len(rows) == 4
    exact = rows["quadrature", 1]["log_px_mean"]
    assert rows["quadrature", 3000]["log_px_mean"] == exact
    assert exact == pytest.approx(summary["log_px_mean"], abs=0.01)  # 400 vs 100 points
    # naive Monte Carlo climbs towards it from below
    assert rows["prior", 1]["log_px_mean"] < rows["prior", 3000]["log_px_mean"] < exact


def test_bdmc_sandwiches_log_px_on_simulated_data_and_tightens(
    trained_run, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "bdmc"
    argv = [f"ckpt_path={trained_run}/checkpoints/last.ckpt", "num_examples=6", "num_steps=[2,40]"]
    run_cli(bdmc.main, [*argv, "ais.leapfrog_steps=3", f"hydra.run.dir={out}"], monkeypatch)
    rows = json.loads((out / "bdmc.json").read_text())
    assert [r["num_steps"] for r in rows] == [2, 40]
    short, long = rows
    assert short["gap_mean"] > long["gap_mean"] > 0
    assert short["lower_mean"] < long["lower_mean"] and long["upper_mean"] < short["upper_mean"]
    with open(out / "per_example.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6 and all(float(r["lower_40"]) < float(r["upper_2"]) for r in table)
    printed = capsys.readouterr().out
    assert "AIS    40 steps from the encoder: log p(x) between" in printed
    assert f"wrote results to {out}" in printed and short["start"] == "encoder"


def test_quadrature_refuses_a_latent_of_more_than_two_dimensions(
    trained_run, tmp_path, monkeypatch, capsys
):
    argv = [f"ckpt_path={trained_run}/checkpoints/last.ckpt", "estimator=quadrature"]
    output = run_cli_failing(
        evaluate.main, [*argv, f"hydra.run.dir={tmp_path}"], monkeypatch, capsys
    )
    assert "this model has 32. Use estimator=importance or estimator=ais" in user_error(output)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data=nonexistent"], "Could not find 'data/nonexistent'"),
        (["estimator=nonexistent"], "Available options"),
        (["not_a_key=3"], "not_a_key"),
    ],
)
def test_unknown_choices_and_keys_fail_with_hydras_message(
    argv, message, tmp_path, monkeypatch, capsys
):
    output = run_cli_failing(train.main, [*argv, f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    assert message in output


def test_a_user_error_is_one_line_unless_the_traceback_is_asked_for(tmp_path, monkeypatch, capsys):
    argv = ["debug=fast", "estimator.num_samples=0", f"hydra.run.dir={tmp_path}/run"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli(train.main, argv, monkeypatch)
    assert stopped.value.code == USER_ERROR_EXIT == 2
    printed = capsys.readouterr()
    line = user_error(printed.err)
    assert line == "vaelik-train: error: estimator.num_samples must be an integer >= 1, got 0"
    assert "HYDRA_FULL_ERROR=1" in printed.err and len(printed.err.splitlines()) <= 4
    # HYDRA_FULL_ERROR=1: the exception itself, with its traceback, as for any other error
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="^estimator.num_samples must be"):
        run_cli(train.main, argv, monkeypatch)


def test_missing_data_offline_fails_with_the_fix(tmp_path, monkeypatch, capsys):
    output = run_cli_failing(
        train.main,
        [
            "data=binarized_mnist",
            f"paths.data_dir={tmp_path}/nothing",
            "data.source.download=false",
            f"hydra.run.dir={tmp_path}/run",
        ],
        monkeypatch,
        capsys,
    )
    assert "set paths.data_dir to a folder holding" in user_error(output)


def test_bernoulli_head_on_8bit_data_fails_at_config_time(mnist_dir, tmp_path, monkeypatch, capsys):
    output = run_cli_failing(
        train.main,
        [
            "data=mnist",
            f"paths.data_dir={mnist_dir}",
            "data.source.val_size=20",
            f"hydra.run.dir={tmp_path}/run",
        ],
        monkeypatch,
        capsys,
    )
    assert "data.binarize=dynamic" in user_error(output)
    assert not (tmp_path / "run/checkpoints").exists()  # failed before any training


@pytest.mark.parametrize("data", ["binarized_mnist", "dynamic_mnist"])
def test_real_dataset_configs_train(data, mnist_dir, binarized_mnist_dir, tmp_path, monkeypatch):
    data_dir = binarized_mnist_dir if data == "binarized_mnist" else mnist_dir
    overrides = ["data.source.val_size=20"] if data == "dynamic_mnist" else []
    run_cli(
        train.main,
        [
            f"data={data}",
            f"paths.data_dir={data_dir}",
            "data.source.download=false",
            "debug=fast",
            *overrides,
            f"hydra.run.dir={tmp_path}/run",
        ],
        monkeypatch,
    )
    assert math.isfinite(read_metrics(tmp_path / "run")["val/log_px"])


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["wandb", "tensorboard", "none"])
def test_loggers_write_their_runs(logger, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_cli(
        train.main,
        [f"logger={logger}", "debug=fast", f"hydra.run.dir={run_dir}"],
        monkeypatch,
    )
    if logger == "wandb":
        offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
        assert offline_runs and list(offline_runs[0].glob("*.wandb"))
    elif logger == "tensorboard":
        assert list(run_dir.glob("tensorboard/version_0/events.out.tfevents.*"))
    assert (run_dir / "checkpoints/last.ckpt").is_file()


@pytest.mark.slow
def test_convergence_table_and_plot(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "conv"
    run_cli(
        convergence.main,
        [
            f"ckpt_path={trained_run}/checkpoints/last.ckpt",
            "ks=[1,10,40]",
            "num_examples=8",
            "estimators=[importance,prior]",
            "proposals=[encoder,inflated]",
            "split=val",
            f"hydra.run.dir={out}",
        ],
        monkeypatch,
    )
    rows = json.loads((out / "convergence.json").read_text())
    lines = {(r["estimator"], r["proposal"]) for r in rows}
    assert lines == {("importance", "encoder"), ("importance", "inflated"), ("prior", "prior")}
    assert len(rows) == 9 and (out / "convergence.png").stat().st_size > 10_000
    printed = capsys.readouterr()
    assert printed.out.count("k-hat = n/a (K < 25)") == 6  # K = 1 and 10, three lines
    assert len(re.findall(r"K=    40 .* k-hat = \d\.\d\d\n", printed.out)) == 3
    assert not re.search(r"\.\d{6,}", printed.out)  # no figure printed with 16 digits
    assert printed.out.rstrip().endswith(f"wrote results to {out}")
    assert printed.err.count("8/8 examples") == 3  # a progress bar per line
    # nested: the K = 10 row equals a separate evaluation with K = 10
    eval_dir = tmp_path / "eval"
    run_cli(
        evaluate.main,
        [
            f"ckpt_path={trained_run}/checkpoints/last.ckpt",
            "estimator.num_samples=10",
            "num_examples=8",
            "split=val",
            f"hydra.run.dir={eval_dir}",
        ],
        monkeypatch,
    )
    single = json.loads((eval_dir / "summary.json").read_text())
    row = next(r for r in rows if r["proposal"] == "encoder" and r["num_samples"] == 10)
    assert row["log_px_mean"] == pytest.approx(single["log_px_mean"], abs=1e-9)


@pytest.mark.slow
def test_a_killed_run_resumes_with_continuous_steps(tmp_path):
    """Kill a training process after its first checkpoint, resume it with ckpt_path=last:
    the resumed run finishes every epoch, its steps continue where the checkpoint stopped,
    and the killed run's metrics and checkpoints are still there."""
    run_dir = tmp_path / "run"
    args = [
        "trainer.max_epochs=6",
        "trainer.limit_train_batches=5",
        "trainer.log_every_n_steps=1",
        "callbacks.log_likelihood.num_examples=10",
        "callbacks.log_likelihood.num_samples=4",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "vaelik.cli.train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the write finish
    process.kill()
    process.wait()
    killed = torch.load(last, weights_only=True)
    assert killed["epoch"] < 5, "the run finished before it could be killed"
    result = subprocess.run(
        [sys.executable, "-m", "vaelik.cli.train", *args, "ckpt_path=last"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = torch.load(last, weights_only=True)
    assert final["epoch"] == 5 and final["global_step"] == 30  # 6 epochs x 5 batches
    versions = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    assert len(versions) == 2  # the killed run's metrics are kept
    with open(versions[1]) as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert min(steps) >= killed["global_step"] and max(steps) == 29


def test_resume_from_missing_or_mismatched_checkpoint_fails_clearly(
    trained_run, tmp_path, monkeypatch, capsys
):
    output = run_cli_failing(
        train.main, ["ckpt_path=last", f"hydra.run.dir={tmp_path}/new"], monkeypatch, capsys
    )
    assert "ckpt_path=last but" in output and "hydra.run.dir=<that run's directory>" in output
    output = run_cli_failing(
        train.main,
        [
            f"ckpt_path={trained_run}/checkpoints/last.ckpt",
            "latent_dim=5",
            f"hydra.run.dir={tmp_path}/other",
        ],
        monkeypatch,
        capsys,
    )
    assert "would change the run it continues" in output and "latent_dim: 32 -> 5" in output


def test_a_failed_resume_leaves_the_runs_record_as_it_was(
    trained_run, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    output = run_cli_failing(
        train.main,
        [*FAST, "ckpt_path=last", "latent_dim=5", f"hydra.run.dir={run_dir}"],
        monkeypatch,
        capsys,
    )
    assert "would change the run it continues" in output and "latent_dim: 32 -> 5" in output
    after = {
        p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts
    }
    assert after == {p: b for p, b in before.items() if ".hydra" not in p.parts}


def files_of(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` (Hydra's own .hydra records left out) and its bytes."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and ".hydra" not in p.parts}


@pytest.mark.parametrize(
    ("field", "form", "keep_dirpath"),
    [
        ("last_model_path", "local://{victim}", False),
        ("best_model_path", "file://{victim}", True),
        ("best_k_models", "{folder}/../../victim", True),
        ("kth_best_model_path", "simplecache::file://{victim}", False),
    ],
)
def test_a_checkpoint_naming_a_folder_outside_the_run_cannot_delete_it(
    trained_run, tmp_path, monkeypatch, capsys, field, form, keep_dirpath
):
    """A crafted ModelCheckpoint state in last.ckpt: refused in one line with exit 2 before the
    resumed run writes anything, and the folder it names is untouched (Lightning would have
    deleted it at the next save of last.ckpt)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    path = run_dir / "checkpoints" / "last.ckpt"
    raw = torch.load(path, weights_only=True)
    (key,) = [k for k in raw["callbacks"] if k.startswith("ModelCheckpoint")]
    # the copy's state as if it had been written there, then the one planted path
    state = json.loads(
        json.dumps(raw["callbacks"][key], default=float).replace(
            str(trained_run.resolve()), str(run_dir.resolve())
        )
    )
    raw["callbacks"][key] = state
    value = form.format(victim=victim, folder=run_dir / "checkpoints")
    if field == "best_k_models":
        state[field][value] = torch.tensor(-1e9)
    else:
        state[field] = value
    if not keep_dirpath:
        del state["dirpath"]
    torch.save(raw, path)
    before = files_of(run_dir)
    output = run_cli_failing(
        train.main, [*FAST, "ckpt_path=last", f"hydra.run.dir={run_dir}"], monkeypatch, capsys
    )
    line = user_error(output)
    assert f"ModelCheckpoint {field}" in line and "never writes or deletes files" in line
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert files_of(run_dir) == before


def test_a_copied_run_resumes_on_its_copies_and_never_touches_the_original(
    trained_run, tmp_path, monkeypatch
):
    """Resuming a copy of a run, or a run's checkpoint in a new folder, keeps top-k and
    last.ckpt in the new folder (no last-v1.ckpt beside a stale last.ckpt) and leaves every
    file of the original as it was."""
    original = files_of(trained_run)
    copy, fresh = tmp_path / "copy", tmp_path / "fresh"
    shutil.copytree(trained_run, copy)
    common = [*FAST, "logger=none", "trainer.max_epochs=3"]
    run_cli(train.main, [*common, "ckpt_path=last", f"hydra.run.dir={copy}"], monkeypatch)
    last = trained_run / "checkpoints" / "last.ckpt"
    run_cli(train.main, [*common, f"ckpt_path={last}", f"hydra.run.dir={fresh}"], monkeypatch)
    assert files_of(trained_run) == original
    for run_dir in (copy, fresh):
        names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert names[-1] == "last.ckpt" and len(names) == 2, names  # one best, one last
        ended = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert ended["epoch"] == 2
        (state,) = [v for k, v in ended["callbacks"].items() if k.startswith("ModelCheckpoint")]
        assert Path(state["dirpath"]) == (run_dir / "checkpoints").resolve()


def test_an_unwritable_checkpoint_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoint folder should be")
    output = run_cli_failing(train.main, [*FAST, f"hydra.run.dir={run_dir}"], monkeypatch, capsys)
    assert f"cannot write checkpoints into {run_dir / 'checkpoints'}" in output
    assert "callbacks.model_checkpoint.dirpath" in output
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "csv").exists()


@pytest.mark.slow
def test_last_checkpoint_is_the_latest_epoch_even_when_the_best_is_not_saved(tmp_path, monkeypatch):
    # top-k checkpoints only every 2nd epoch: epoch 1 saves one, epoch 2 does not; Lightning's
    # own class left last.ckpt at epoch 1 although the run trained epoch 2
    run_dir = tmp_path / "run"
    run_cli(
        train.main,
        [
            "debug=fast",
            "logger=none",
            "latent_dim=2",
            "trainer.max_epochs=3",
            "+callbacks.model_checkpoint.every_n_epochs=2",
            "callbacks.log_likelihood.num_examples=4",
            "callbacks.log_likelihood.convergence_ks=null",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        monkeypatch,
    )
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 15)
    assert [p.name for p in (run_dir / "checkpoints").glob("best-*")] == ["best-epoch001.ckpt"]


@pytest.mark.slow
def test_a_resumed_run_is_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    common = [*FAST, "logger=none", "callbacks.log_likelihood.convergence_ks=null"]
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    in_halves = f"hydra.run.dir={halves}"
    run_cli(train.main, [*common, "trainer.max_epochs=3", f"hydra.run.dir={whole}"], monkeypatch)
    run_cli(train.main, [*common, "trainer.max_epochs=2", f"hydra.run.dir={halves}"], monkeypatch)
    # a new learning rate would be ignored (the optimiser's state is restored): refused
    output = run_cli_failing(
        train.main,
        [*common, "trainer.max_epochs=3", "ckpt_path=last", "optim.optimizer.lr=0.1", in_halves],
        monkeypatch,
        capsys,
    )
    assert "would change the run it continues: optim.optimizer.lr: 0.001 -> 0.1" in output
    run_cli(
        train.main,
        [*common, "trainer.max_epochs=3", "ckpt_path=last", f"hydra.run.dir={halves}"],
        monkeypatch,
    )
    ends = [torch.load(d / "checkpoints/last.ckpt", weights_only=True) for d in (whole, halves)]
    assert ends[0]["global_step"] == ends[1]["global_step"] == 12
    for name, value in ends[0]["state_dict"].items():
        torch.testing.assert_close(ends[1]["state_dict"][name], value, rtol=0, atol=1e-5)
    metrics = [read_metrics(d) for d in (whole, halves)]
    assert metrics[1]["val/log_px"] == pytest.approx(metrics[0]["val/log_px"], abs=1e-5)
    assert metrics[1]["val/elbo"] == pytest.approx(metrics[0]["val/elbo"], abs=1e-5)


def test_a_diverged_run_is_flagged_loudly(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_cli(
        train.main,
        [*FAST, "logger=none", "optim.optimizer.lr=10", f"hydra.run.dir={run_dir}"],
        monkeypatch,
    )
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    metrics = read_metrics(run_dir)
    assert metrics["uniform_bpd"] == 1.0 and metrics["worse_than_uniform"] is True
    assert not metrics["val/bpd"] <= 1.0  # worse than 1 bit per binary pixel, or NaN
    assert "THIS RUN DIVERGED" in printed and "optim.optimizer.lr" in printed
    assert "THIS RUN DIVERGED" in (run_dir / "train.log").read_text()
    assert (run_dir / "checkpoints/last.ckpt").is_file()  # kept, for a post-mortem


def test_a_sound_run_is_not_flagged(trained_run):
    metrics = read_metrics(trained_run)
    assert metrics["uniform_bpd"] == 1.0 and metrics["worse_than_uniform"] is False


@pytest.mark.parametrize(
    "settings, warned",
    [
        ({"max_epochs": -1}, True),
        ({"max_epochs": -1, "max_steps": 100}, False),
        ({"max_epochs": -1, "max_time": "00:00:10:00"}, False),
        ({"max_epochs": 5}, False),
    ],
)
def test_an_endless_training_says_so(settings, warned, caplog):
    trainer = lightning.pytorch.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, **settings
    )
    with caplog.at_level("WARNING"):
        warn_if_unbounded(trainer)
    assert ("trains until it is interrupted" in caplog.text) == warned


def test_progress_in_a_log_file_is_a_line_a_minute_and_one_at_the_end(capsys):
    progress = PlainProgress(total=10, description="IS, K=5000", interval_s=3600)
    progress.advance(3)
    assert capsys.readouterr().err == ""  # within the minute: quiet
    progress.advance(7)
    assert re.fullmatch(
        r"IS, K=5000: 10/10 examples, 0:00:0\d, 0:00:00 left\n", capsys.readouterr().err
    )
    assert clock(3725.4) == "1:02:05" and clock(float("nan")) == "?"


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (["estimator.num_samples=abc"], "estimator.num_samples must be an integer >= 1, got 'abc'"),
        (["optim.optimizer.lr=-1"], "optim.optimizer.lr must be a number >= 0, got -1"),
        (["optim.optimizer.lr=fast"], "optim.optimizer.lr must be a number >= 0, got 'fast'"),
        (["latent_dim=0"], "latent_dim must be an integer >= 1, got 0"),
        (
            ["hydra.run.dir={file}/run"],
            "hydra.run.dir={file}/run: {file} is a file, not a folder, so the run folder cannot "
            "be made there: choose another hydra.run.dir",
        ),
    ],
)
def test_a_mistake_is_one_line_and_exit_status_2(mistake, message, tmp_path, monkeypatch, capsys):
    """Each of these once ended in Hydra's or torch's traceback (or a warning before the
    message): now vaelik's one line, exit status 2, before any data is read or run written."""
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    argv = [item.format(file=file) for item in mistake]
    if not any(item.startswith("hydra.run.dir") for item in argv):
        argv.append(f"hydra.run.dir={tmp_path}/run")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli(train.main, ["debug=fast", *argv], monkeypatch)
    printed = capsys.readouterr()
    assert stopped.value.code == USER_ERROR_EXIT == 2
    assert (
        user_error(printed.err + printed.out) == f"vaelik-train: error: {message.format(file=file)}"
    )
    assert "Warning" not in printed.err + printed.out
    assert not (tmp_path / "run" / "config.yaml").exists()
