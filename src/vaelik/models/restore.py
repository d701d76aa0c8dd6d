"""A trained model and its data, rebuilt from a checkpoint alone.

The checkpoint's stored config is composed Hydra config; it is rebuilt here (the model layer,
where :mod:`vaelik.models.factory` builds models from configs), so that the evaluation library
above takes a model and never a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from vaelik.checkpoint import VAECheckpoint, load_weights, read_checkpoint
from vaelik.config import build
from vaelik.data import ImageDataModule
from vaelik.errors import ConfigError
from vaelik.models.factory import build_model
from vaelik.models.trusted_config import check_trusted_config, without_write_settings
from vaelik.models.vae import VAE


@dataclass(frozen=True)
class Restored:
    """What a checkpoint rebuilds: its model with its weights, its datamodule, its record, and
    the stored settings that were ignored (``ignored``: the download switch and mirror URL,
    which only the caller decides; a command says so on standard error)."""

    model: VAE
    datamodule: ImageDataModule
    record: VAECheckpoint
    ignored: tuple[str, ...] = ()

    def ignored_text(self) -> str | None:
        """One line saying which stored settings were ignored and why, or None."""
        if not self.ignored:
            return None
        return (
            f"ignored the checkpoint's {', '.join(self.ignored)}: downloads and mirrors are chosen "
            "on the command line (download=true data_dir=FOLDER), never by a checkpoint"
        )


def model_from_checkpoint(
    path: str | Path,
    data_dir: str | Path | None = None,
    trusted_packages: Sequence[str] = (),
    download: bool = False,
) -> Restored:
    """The model of the checkpoint at ``path`` with its weights, its datamodule (data folder
    replaced by ``data_dir`` when given) and the checkpoint's record.

    The stored config may name vaelik's own components with the settings their classes take,
    and classes of ``trusted_packages`` (the user's opt-in). Nothing in it decides what is
    downloaded or written: a stored data folder is only read, the stored ``download`` and
    mirror URL are ignored (listed in :attr:`Restored.ignored`), and a download happens only
    where the caller asks for one (``download``), into a ``data_dir`` the caller names."""
    if download and data_dir is None:
        raise ConfigError(
            "download=true needs data_dir=FOLDER: vaelik downloads a checkpoint's data set only "
            "into a folder you name, never into one the checkpoint names"
        )
    checkpoint = read_checkpoint(path)
    check_trusted_config(checkpoint.config, path, trusted_packages)  # before anything is built
    stored, ignored = without_write_settings(checkpoint.config, download)
    run_cfg = OmegaConf.create(stored)
    if data_dir is not None and "data_dir" in run_cfg.data.source:
        run_cfg.data.source.data_dir = str(data_dir)
    datamodule = build(run_cfg.data, "data")
    model = build_model(run_cfg, datamodule.kind)
    load_weights(model, checkpoint)
    return Restored(model, datamodule, checkpoint, tuple(ignored))
