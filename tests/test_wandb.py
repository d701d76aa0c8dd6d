"""logger=wandb, offline: what a run writes (config, metrics, images, histograms, the
convergence plot), names and groups from the config, and failed runs closed as failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli, run_cli_failing
from vaelik.cli import train
from wandb_records import summarize_finished

FAST = ["logger=wandb", "debug=fast", "trainer.enable_progress_bar=false"]


def run_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_wandb_run_holds_config_metrics_media_and_histograms(tmp_path, monkeypatch):
    run_cli(train.main, [*FAST, "latent_dim=7", f"hydra.run.dir={tmp_path}"], monkeypatch)
    (path,) = run_files(tmp_path)
    written = summarize_finished(path)
    assert {
        "data",
        "encoder",
        "decoder",
        "likelihood",
        "estimator",
        "proposal",
        "trainer",
        "latent_dim",
    } <= written["config"]
    for key in (
        "val/log_px",
        "val/bpd",
        "val/ess",
        "val/elbo",
        "train/loss_step",
        "trainer/global_step",
    ):
        assert key in written["history"], key
    for media in (
        "samples",
        "reconstructions",
        "val/convergence",
        "val/log_px_hist",
        "val/ess_hist",
    ):
        assert f"{media}/_type" in written["history"], media
    images = {p.name.split("_")[0] for p in path.parent.glob("files/media/images/**/*.png")}
    assert {"samples", "reconstructions", "convergence"} <= images
    assert (
        written["run"]["name"].startswith("debug=fast") and "latent_dim=7" in written["run"]["name"]
    )
    assert written["exit_code"] == 0


@pytest.mark.slow
def test_a_sweep_groups_its_runs(tmp_path, monkeypatch):
    sweep = tmp_path / "my_sweep"
    run_cli(train.main, ["-m", *FAST, "latent_dim=4,6", f"hydra.sweep.dir={sweep}"], monkeypatch)
    runs = [summarize_finished(p)["run"] for job in ("0", "1") for p in run_files(sweep / job)]
    assert len(runs) == 2
    assert {r["group"] for r in runs} == {"my_sweep"}
    assert {r["name"] for r in runs} == {
        "debug=fast,latent_dim=4,logger=wandb,trainer.enable_progress_bar=False",
        "debug=fast,latent_dim=6,logger=wandb,trainer.enable_progress_bar=False",
    }


def test_a_failed_run_still_finishes_its_wandb_run(tmp_path, monkeypatch, capsys):
    # the network is built for 28x28 but the data promises 28x29: fit fails in its setup
    output = run_cli_failing(
        train.main,
        [
            *FAST,
            "data.shape=[1,28,29]",
            "encoder=mlp",
            "encoder.in_shape=[1,28,28]",
            "decoder.out_shape=[1,28,28]",
            f"hydra.run.dir={tmp_path}",
        ],
        monkeypatch,
        capsys,
    )
    assert "data.shape" in output
    (path,) = run_files(tmp_path)
    assert summarize_finished(path)["exit_code"] == 1


@pytest.mark.parametrize("logger", ["tensorboard"])
def test_tensorboard_gets_histograms_and_images(logger, tmp_path, monkeypatch):
    run_cli(
        train.main, [f"logger={logger}", "debug=fast", f"hydra.run.dir={tmp_path}"], monkeypatch
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = tmp_path.glob("tensorboard/version_0/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"histograms": 0, "images": 0})
    accumulator.Reload()
    assert {"val/log_px_hist", "val/ess_hist"} <= set(accumulator.Tags()["histograms"])
    assert {"samples", "reconstructions", "val/convergence"} <= set(accumulator.Tags()["images"])
