"""A trained model and its data, rebuilt from a checkpoint alone (for the commands)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vaelik.checkpoint import VAECheckpoint, load_weights, read_checkpoint
from vaelik.data import ImageDataModule
from vaelik.errors import ConfigError
from vaelik.evaluation.trusted_config import check_trusted_config, without_write_settings
from vaelik.inference.choices import build
from vaelik.models.factory import build_model
from vaelik.models.vae import VAE


def model_from_checkpoint(
    path: str | Path,
    data_dir: str | None = None,
    trusted_packages: Sequence[str] = (),
    download: bool = False,
) -> tuple[VAE, ImageDataModule, VAECheckpoint]:
    """The model of the checkpoint at ``path`` with its weights, its datamodule (data folder
    replaced by ``data_dir`` when given) and the checkpoint's record.

    The stored config may name vaelik's own components with the settings their classes take,
    and classes of ``trusted_packages`` (the user's opt-in). Nothing in it decides what is
    downloaded or written: a stored data folder is only read, the stored ``download`` and
    mirror URL are ignored (and said so on standard error), and a download happens only where
    the caller asks for one (``download``), into a ``data_dir`` the caller names."""
    if download and data_dir is None:
        raise ConfigError(
            "download=true needs data_dir=FOLDER: vaelik downloads a checkpoint's data set only "
            "into a folder you name, never into one the checkpoint names"
        )
    checkpoint = read_checkpoint(path)
    check_trusted_config(checkpoint.config, path, trusted_packages)  # before anything is built
    stored, ignored = without_write_settings(checkpoint.config, download)
    if ignored:
        print(
            f"ignored the checkpoint's {', '.join(ignored)}: downloads and mirrors are chosen on "
            "the command line (download=true data_dir=FOLDER), never by a checkpoint",
            file=sys.stderr,
        )
    run_cfg = OmegaConf.create(stored)
    if data_dir is not None and "data_dir" in run_cfg.data.source:
        run_cfg.data.source.data_dir = data_dir
    datamodule = build(run_cfg.data, "data")
    model = build_model(run_cfg, datamodule.kind)
    load_weights(model, checkpoint)
    return model, datamodule, checkpoint


def load_model(cfg: DictConfig) -> tuple[VAE, ImageDataModule]:
    """The VAE of ``cfg.ckpt_path`` and its datamodule (data folder from ``cfg.data_dir``,
    classes of ``cfg.trusted_packages`` allowed in its stored config)."""
    model, datamodule, _ = model_from_checkpoint(
        cfg.ckpt_path,
        cfg.get("data_dir"),
        list(cfg.get("trusted_packages") or ()),
        bool(cfg.get("download", False)),
    )
    return model, datamodule
