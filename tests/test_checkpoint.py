"""Checkpoints: rebuilt from their own config; missing, corrupt and mismatched ones fail clearly."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from vaelik.checkpoint import CONFIG_KEY, CheckpointError, load_weights, read_checkpoint
from vaelik.errors import ConfigError, DataNotFoundError
from vaelik.models.factory import build_model
from vaelik.models.restore import model_from_checkpoint


@pytest.fixture
def saved(tmp_path):
    """A checkpoint in Lightning's layout, written from a model built from the default config."""
    cfg = compose_config("train", ["latent_dim=3"], output_dir=str(tmp_path))
    model = build_model(cfg, "binary")
    config = OmegaConf.to_container(cfg, resolve=True)
    path = tmp_path / "model.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, CONFIG_KEY: config, "epoch": 1}, path)
    return path, model, config


def test_round_trip_restores_identical_outputs(saved):
    path, model, _ = saved
    checkpoint = read_checkpoint(path)
    rebuilt = build_model(OmegaConf.create(checkpoint.config), "binary")
    load_weights(rebuilt, checkpoint)
    z = torch.randn(5, 3)
    torch.testing.assert_close(rebuilt.decode(z).mean, model.decode(z).mean, rtol=0, atol=0)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*ckpt_path"):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_corrupt_checkpoint(saved):
    path = saved[0]
    path.write_bytes(path.read_bytes()[:200])  # truncated, as by a killed copy
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(path)


def test_checkpoint_without_config(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not written by vaelik-train"):
        read_checkpoint(path)


def test_mismatched_checkpoint(saved, tmp_path):
    path = saved[0]
    other = compose_config("train", ["latent_dim=4"], output_dir=str(tmp_path))
    checkpoint = read_checkpoint(path)
    with pytest.raises(CheckpointError, match="(?s)does not match.*size mismatch"):
        load_weights(build_model(other, "binary"), checkpoint)


def test_checkpoint_of_the_first_version_fails_clearly(saved, tmp_path):
    """vaelik 0.1 configs had no model group: say so rather than fail inside instantiate."""
    path, _, config = saved
    old = copy.deepcopy(config)
    del old["model"]
    raw = torch.load(path, weights_only=True)
    raw[CONFIG_KEY] = old
    torch.save(raw, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="vaelik 0.1.*retrain"):
        read_checkpoint(tmp_path / "old.ckpt")


@pytest.mark.parametrize(
    "section, node",
    [
        ("model", {"_target_": "builtins.open", "file": "VICTIM", "mode": "w"}),
        ("data", {"_target_": "torch.load", "f": "VICTIM", "weights_only": False}),
        # a vaelik function that writes files is no model component either
        ("likelihood", {"_target_": "vaelik.data.binarized_mnist.download_verified"}),
        ("model", {"_target_": "vaelik.models.networks.mlp", "sizes": [1, 1]}),
    ],
)
def test_a_crafted_checkpoint_config_builds_nothing(saved, tmp_path, section, node):
    path, _, config = saved
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    crafted = copy.deepcopy(config)
    node = {k: str(victim) if v == "VICTIM" else v for k, v in node.items()}
    if section == "model":
        crafted["model"]["decoder"] = node  # hidden deep inside the model's config
    else:
        crafted[section] = node
    raw = torch.load(path, weights_only=True)
    raw[CONFIG_KEY] = crafted
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=f"sets {section}.*_target_ to '{node['_target_']}'"):
        model_from_checkpoint(path)
    assert victim.read_text() == "precious"


def test_a_checkpoint_config_with_an_interpolation_is_refused(saved, tmp_path):
    path, _, config = saved
    crafted = copy.deepcopy(config)
    crafted["data"]["source"]["data_dir"] = f"${{vaelik.new_dir:{tmp_path}/planted}}"
    raw = torch.load(path, weights_only=True)
    raw[CONFIG_KEY] = crafted
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="interpolation at config.data.source.data_dir"):
        model_from_checkpoint(path)
    assert not (tmp_path / "planted").exists()


def test_the_projects_own_checkpoints_pass_the_allow_list(saved):
    path, model, _ = saved
    rebuilt = model_from_checkpoint(path).model
    z = torch.randn(5, 3)
    torch.testing.assert_close(rebuilt.decode(z).mean, model.decode(z).mean, rtol=0, atol=0)


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("epoch 3: val/elbo -95.1\n")
    with pytest.raises(CheckpointError, match=f"checkpoint {path} cannot be read.*corrupt"):
        read_checkpoint(path)


def test_a_checkpoint_with_nan_weights_names_them_and_the_fix(saved):
    path = saved[0]
    raw = torch.load(path, weights_only=True)
    name = next(k for k, v in raw["state_dict"].items() if v.is_floating_point())
    raw["state_dict"][name] = torch.full_like(raw["state_dict"][name], float("nan"))
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=rf"NaN or infinite weights \({name[6:]}.*lower"):
        read_checkpoint(path)


def write_crafted(path, config, change) -> None:
    """Rewrite the checkpoint at ``path`` with ``change(config copy)`` as its stored config."""
    crafted = copy.deepcopy(config)
    change(crafted)
    raw = torch.load(path, weights_only=True)
    raw[CONFIG_KEY] = crafted
    torch.save(raw, path)


@pytest.mark.parametrize(
    "source",
    [
        {"_target_": "vaelik.data.BinarizedMNIST"},
        {"_target_": "vaelik.data.MNIST", "val_size": 10},
        {"_target_": "vaelik.data.FashionMNIST", "val_size": 10},
        {"_target_": "vaelik.data.CIFAR10", "val_size": 10},
        {"_target_": "vaelik.data.SVHN", "val_size": 10},
    ],
    ids=lambda source: source["_target_"].rsplit(".", 1)[1],
)
def test_a_checkpoint_never_chooses_where_vaelik_writes_or_what_it_downloads(
    saved, tmp_path, source
):
    """A stored data folder, download switch and mirror URL: the folder is only read (here it
    does not exist, so the data is missing), the switch and URL are ignored and named, and
    nothing is created: not the folder, not a download."""
    path, _, config = saved
    marker = tmp_path / "marker"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "binarized_mnist_test.amat").write_text("0 " * 783 + "0\n")
    stored = {
        **source,
        "data_dir": str(marker / "planted"),
        "download": True,
        **({"base_url": mirror.as_uri()} if "Binarized" in source["_target_"] else {}),
    }
    write_crafted(path, config, lambda crafted: crafted["data"].update(source=stored))
    restored = model_from_checkpoint(path)
    datamodule = restored.datamodule
    assert "data.source.download=True" in restored.ignored
    assert "ignored the checkpoint's data.source.download=True" in restored.ignored_text()
    with pytest.raises(DataNotFoundError, match="downloading is off"):
        datamodule.dataset("test")
    assert not marker.exists()
    # the user may ask for the download, into a folder they name (here it cannot succeed: no
    # network), never into the checkpoint's
    with pytest.raises(ConfigError, match="download=true needs data_dir"):
        model_from_checkpoint(path, download=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    "where",
    ["data.source", "data", "model.guide", "model.decoder", "likelihood"],
)
def test_a_setting_outside_a_class_schema_is_refused_by_its_key(saved, tmp_path, where):
    path, _, config = saved

    def plant(crafted):
        node = crafted
        for key in where.split("."):
            node = node[key]
        node["cache_dir"] = str(tmp_path / "planted")

    write_crafted(path, config, plant)
    with pytest.raises(CheckpointError, match=f"sets {where}.cache_dir, which .* does not take"):
        model_from_checkpoint(path)
    assert not (tmp_path / "planted").exists()


@pytest.mark.parametrize(
    "change",
    [
        lambda crafted: crafted.update(data=None),
        lambda crafted: crafted["data"]["source"].pop("_target_"),
        lambda crafted: crafted["model"].pop("_target_"),
    ],
    ids=["no data", "a source without a target", "a model without a target"],
)
def test_a_malformed_stored_config_is_a_checkpoint_error(saved, change):
    path, _, config = saved
    write_crafted(path, config, change)
    with pytest.raises(CheckpointError, match="has no .* with a _target_"):
        model_from_checkpoint(path)
