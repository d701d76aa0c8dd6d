"""``vaelik-train``: train a VAE as the Hydra config says, with log p(x) tracked every epoch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vaelik.config import config_dir
from vaelik.factory import build_all, build_model
from vaelik.lit_module import VAELitModule

warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def train(cfg: DictConfig) -> float | None:
    """Fit the model of ``cfg``; return the final value of ``cfg.optimized_metric`` (for sweepers).

    The run directory ``cfg.paths.output_dir`` receives ``config.yaml`` (resolved),
    ``checkpoints/`` (``last.ckpt`` and the best by ``val/elbo``), ``samples.png``,
    ``reconstructions.png``, the loggers' files and ``metrics.json`` (final metrics).
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule.kind)
    module = VAELitModule(
        model=model,
        optimizer=instantiate(cfg.optim.optimizer),
        num_dims=datamodule.num_dims,
        analytic_kl=cfg.analytic_kl,
        config=resolved,
    )
    loggers = build_all(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(resolved)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=build_all(cfg.get("callbacks")), logger=loggers or False
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    final = {key: float(value) for key, value in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(final, indent=2, sort_keys=True))
    metric = cfg.get("optimized_metric")
    return final.get(metric) if metric else None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console-script entry point (``vaelik-train``): compose the config, then :func:`train`."""
    return train(cfg)


if __name__ == "__main__":
    main()
