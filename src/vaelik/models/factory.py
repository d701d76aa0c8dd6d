"""Build the model of a composed config with ``hydra.utils.instantiate``."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from vaelik.data.source import DataKind
from vaelik.errors import UnsupportedCombinationError
from vaelik.models.vae import VAE


def build_model(cfg: DictConfig, data_kind: DataKind) -> VAE:
    """The model of ``cfg.model`` (guide, prior, decoder; see ``conf/model/``) for data of
    ``data_kind``; an unsuitable likelihood head or an impossible combination fails here."""
    likelihood = instantiate(cfg.likelihood)
    likelihood.check_data(data_kind)
    try:
        return instantiate(
            cfg.model,
            likelihood=likelihood,
            input_scale=1.0 / 255.0 if data_kind == "8bit" else 1.0,
        )
    except InstantiationException as error:  # Hydra wraps it; the caller wants the reason
        if isinstance(error.__cause__, UnsupportedCombinationError):
            raise error.__cause__ from None
        raise
