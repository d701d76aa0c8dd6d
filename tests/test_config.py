"""Every file of every config group composes, resolves, and builds its object."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_config
from vaelik import config as vaelik_config
from vaelik.config import config_dir
from vaelik.models.factory import build_model
from vaelik.training.fit import build_all, optimizer_factory

CONF = Path(config_dir())
TRAIN_GROUPS = [
    "data",
    "likelihood",
    "model",
    "posterior",
    "prior",
    "encoder",
    "decoder",
    "objective",
    "proposal",
    "estimator",
    "optim",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "experiment",
    "debug",
]
NOT_BUILDABLE_HERE = {("trainer", "gpu")}  # needs a GPU


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(group, option) for group in TRAIN_GROUPS for option in options(group)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_group_option_composes_and_resolves(group, option, tmp_path):
    cfg = compose_config("train", [f"{group}={option}"], output_dir=str(tmp_path))
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["latent_dim"] >= 1
    node = cfg.get(group)
    if group in ("model", "posterior", "prior", "experiment"):  # parts of the model: build it
        model = build_model(cfg, instantiate(cfg.data).kind)
        assert model.latent_dim == resolved["latent_features"]
        return
    if group in ("paths", "debug") or (group, option) in NOT_BUILDABLE_HERE:
        return
    if group in ("logger", "callbacks"):
        built = [instantiate(n) for n in node.values()]
        assert all(b is not None for b in built)
    elif group == "optim":
        assert callable(instantiate(node.optimizer))
    else:
        assert instantiate(node) is not None


def test_every_group_has_options_and_eval_config_composes(tmp_path):
    for group in TRAIN_GROUPS:
        assert options(group), f"conf/{group}/ is empty"
    cfg = compose_config("eval", ["ckpt_path=x.ckpt"], output_dir=str(tmp_path))
    assert cfg.estimator.num_samples == 5000
    assert cfg.split == "test"


def test_decoder_is_wired_to_data_and_head_by_interpolation(tmp_path):
    cfg = compose_config("train", ["latent_dim=7"], output_dir=str(tmp_path))
    assert list(cfg.decoder.out_shape) == [1, 28, 28]
    assert cfg.encoder.out_features == 14
    assert cfg.decoder.in_features == 7


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    class FrozenClock:
        @staticmethod
        def now():
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(vaelik_config, "datetime", FrozenClock)
    parent = tmp_path / "outputs/train/runs"
    folders = [vaelik_config.new_run_dir(str(parent)) for _ in range(3)]
    assert [Path(f).name for f in folders] == [
        "2026-01-02_03-04-05",
        "2026-01-02_03-04-05_2",
        "2026-01-02_03-04-05_3",
    ]
    assert all(Path(f).is_dir() and not any(Path(f).iterdir()) for f in folders)
    # the default run and sweep folders go through it
    hydra_defaults = (Path(vaelik_config.config_dir()) / "hydra/default.yaml").read_text()
    assert hydra_defaults.count("${vaelik.new_dir:") == 2


@pytest.mark.parametrize(
    ("experiment", "left"),  # an experiment's own whole callbacks (early stopping) stay
    [("binarized_mnist", set()), ("bmnist_vae", {"EarlyStopping"})],
)
def test_callbacks_none_removes_the_callbacks_an_experiment_configures(experiment, left):
    cfg = compose_config(overrides=[f"experiment={experiment}", "callbacks=none"])
    assert "log_likelihood" in cfg.callbacks  # the experiment's settings for it are still there
    assert {type(callback).__name__ for callback in build_all(cfg.callbacks)} == left
    kept = compose_config(overrides=[f"experiment={experiment}"])
    names = {type(callback).__name__ for callback in build_all(kept.callbacks)}
    assert {"LogLikelihoodCallback", "ModelCheckpoint"} <= names


@pytest.mark.parametrize(
    ("overrides", "fused"),
    [
        ([], True),
        (["optim=adamw"], True),
        (["trainer.precision=bf16-mixed"], True),
        (["trainer.gradient_clip_val=1.0"], True),
        # Lightning cannot clip gradients under mixed precision with a fused optimiser
        (["trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0"], False),
        (["trainer.precision=16-mixed", "experiment=cifar10"], False),
    ],
)
def test_adam_is_fused_unless_mixed_precision_clips_gradients(overrides, fused):
    cfg = compose_config(overrides=overrides)
    optimizer = optimizer_factory(cfg)([torch.nn.Parameter(torch.zeros(3))])
    assert optimizer.defaults["fused"] is fused
