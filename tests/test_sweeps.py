"""Hydra multiruns: the basic launcher, joblib, Optuna on the returned metric, the evaluation
sweep proposal x K, and the SLURM recipe's composition."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import run_cli, run_cli_failing
from vaelik.cli import evaluate, train
from vaelik.config import config_dir

#: distributed runs and sweeps: whole trainings in several processes
pytestmark = pytest.mark.slow

FAST = [
    "debug=fast",
    "trainer.enable_progress_bar=false",
    "callbacks.log_likelihood.num_examples=10",
]


def job_metrics(sweep_dir) -> list[dict]:
    jobs = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    return [json.loads((job / "metrics.json").read_text()) for job in jobs]


def test_basic_launcher_runs_every_job(tmp_path, monkeypatch):
    run_cli(train.main, ["-m", *FAST, "latent_dim=4,6", f"hydra.sweep.dir={tmp_path}"], monkeypatch)
    assert len(job_metrics(tmp_path)) == 2


def test_a_user_error_in_one_job_fails_that_job_and_the_sweep_goes_on(
    tmp_path, monkeypatch, capsys
):
    output = run_cli_failing(
        train.main,
        ["-m", *FAST, "estimator.num_samples=0,16", f"hydra.sweep.dir={tmp_path}"],
        monkeypatch,
        capsys,
    )
    assert output.count("vaelik-train: error: estimator.num_samples must be") == 1
    assert not (tmp_path / "0" / "metrics.json").exists()
    assert (tmp_path / "1" / "metrics.json").exists()  # the next job ran


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaelik.cli.train",
            "-m",
            *FAST,
            "latent_dim=4,6",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel" in result.stdout + result.stderr
    assert len(job_metrics(tmp_path)) == 2


def test_optuna_minimises_the_metric_train_returns(tmp_path, monkeypatch):
    run_cli(
        train.main,
        [
            "-m",
            *FAST,
            "+hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweep.dir={tmp_path}",
        ],
        monkeypatch,
    )
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    values = [m["val/bpd"] for m in job_metrics(tmp_path)]
    assert len(values) == 3 and abs(best["best_value"] - min(values)) < 1e-9


def test_evaluation_sweep_proposal_by_k(tmp_path, monkeypatch):
    train_dir = tmp_path / "train"
    run_cli(train.main, [*FAST, f"hydra.run.dir={train_dir}"], monkeypatch)
    sweep = tmp_path / "eval"
    run_cli(
        evaluate.main,
        [
            "-m",
            "+sweep=proposal_k",
            f"ckpt_path={train_dir}/checkpoints/last.ckpt",
            "num_examples=3",
            "split=val",
            f"hydra.sweep.dir={sweep}",
        ],
        monkeypatch,
    )
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    grid = {(s["proposal"], s["num_samples"]) for s in summaries}
    assert grid == {
        (p, k)
        for p in ("encoder", "student_t", "inflated", "defensive")
        for k in (10, 100, 1000, 5000)
    }


def test_slurm_recipe_composes_with_the_submitit_launcher():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "train",
            ["+launcher=slurm", "trainer=ddp", "trainer.devices=4"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 4 and cfg.hydra.launcher.tasks_per_node == 4
