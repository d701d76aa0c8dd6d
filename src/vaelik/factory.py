"""Build the run's objects from a composed config with ``hydra.utils.instantiate``."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vaelik.data.source import DataKind
from vaelik.latent import StandardNormal
from vaelik.model import VAE


def build_model(cfg: DictConfig, data_kind: DataKind) -> VAE:
    """The VAE of ``cfg`` for data of ``data_kind``; an unsuitable likelihood head fails here."""
    likelihood = instantiate(cfg.likelihood)
    likelihood.check_data(data_kind)
    return VAE(
        encoder=instantiate(cfg.encoder),
        posterior=instantiate(cfg.posterior),
        prior=StandardNormal(int(cfg.latent_dim)),
        decoder=instantiate(cfg.decoder),
        likelihood=likelihood,
        input_scale=1.0 / 255.0 if data_kind == "8bit" else 1.0,
    )


def build_all(nodes: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a mapping (callbacks, loggers); skip null entries."""
    if not nodes:
        return []
    return [instantiate(node) for node in nodes.values() if node is not None]
