"""Fit a model as a composed config says: build every part, train, write the run's files."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from omegaconf import DictConfig, OmegaConf

from vaelik.checkpoint import load_weights, read_checkpoint
from vaelik.config import build
from vaelik.errors import SettingError
from vaelik.evaluation.formatting import report_written
from vaelik.inference.log_weights import check_positive
from vaelik.models.factory import build_model
from vaelik.training.checkpointing import check_resumable_states
from vaelik.training.console import console_callbacks, quiet_lightning_tips
from vaelik.training.lit_module import VAELitModule
from vaelik.training.resume import check_same_run, resume_checkpoint

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Fit the model of ``cfg``; return the final value of ``cfg.optimized_metric`` (for sweepers).
    ``cfg`` is a composed config; this module reads nothing of Hydra's run (the command names
    the run, :func:`vaelik.cli.train.name_run_from_hydra`).

    The run directory ``cfg.paths.output_dir`` receives ``config.yaml`` (resolved),
    ``checkpoints/`` (``last.ckpt`` and the best by ``val/elbo``), ``samples.png``,
    ``reconstructions.png``, the loggers' files and ``metrics.json`` (final metrics).
    """
    output_dir = Path(cfg.paths.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)

    quiet_lightning_tips()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    for section in ("estimator", "proposal"):  # a bad setting is named before any work
        if cfg.get(section) is not None:
            build(cfg[section], section)
    check_optimizer(cfg.optim.optimizer)
    if "latent_dim" in cfg:  # before any network is built with it
        check_positive("latent_dim", cfg.latent_dim)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule.kind)
    # check first, write after: a missing, corrupt or mismatched checkpoint, or a checkpoint
    # folder that cannot be written, fails before the run's config and logs are touched
    resume = resume_checkpoint(cfg.get("ckpt_path"), output_dir)
    if resume is not None:
        saved = read_checkpoint(resume)
        check_same_run(saved.config, resolved, resume)
        load_weights(model, saved)
    callbacks = build_all(cfg.get("callbacks")) + console_callbacks(cfg.trainer)
    if resume is not None:  # nothing path-like is taken from the checkpoint
        check_resumable_states(saved.callback_states, callbacks, resume)
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            ensure_writable_folder(Path(callback.dirpath))

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    module = VAELitModule(
        model=model,
        optimizer=optimizer_factory(cfg),
        num_dims=datamodule.num_dims,
        objective=instantiate(cfg.objective),
        config=resolved,
    )
    loggers = build_all(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(resolved)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    warn_if_unbounded(trainer)
    succeeded = False
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        succeeded = True
    finally:
        finish_loggers(loggers, succeeded)
        release_process_group()

    final: dict[str, Any] = {key: float(value) for key, value in trainer.callback_metrics.items()}
    final.update(compare_with_uniform(final, datamodule.kind))
    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(final, indent=2, sort_keys=True))
        report_written(output_dir)
    metric = cfg.get("optimized_metric")
    return final.get(metric) if metric else None


def warn_if_unbounded(trainer: pl.Trainer) -> None:
    """Say so when nothing but early stopping or an interrupt will end the training:
    ``trainer.max_epochs=-1`` with no ``max_steps`` and no ``max_time``."""
    if trainer.max_epochs != -1 or trainer.max_steps != -1:
        return
    callbacks = getattr(trainer, "callbacks", [])
    if any(isinstance(c, Timer) and getattr(c, "_duration", None) for c in callbacks):
        return
    stopper = any(isinstance(c, EarlyStopping) for c in callbacks)
    log.warning(
        "trainer.max_epochs=-1 with no trainer.max_steps or trainer.max_time: this run trains "
        "until %s. Set trainer.max_epochs=N or trainer.max_time=DD:HH:MM:SS to bound it.",
        "early stopping ends it or it is interrupted" if stopper else "it is interrupted",
    )


UNIFORM_BPD = {"binary": 1.0, "8bit": 8.0}  # a uniform model of the data: log2 of its values


def compare_with_uniform(final: dict[str, Any], data_kind: str) -> dict[str, Any]:
    """``{"uniform_bpd": u, "worse_than_uniform": bool}`` for the run's final validation
    bits/dim (``val/bpd`` by importance sampling if measured, else ``val/elbo_bpd``) against a
    uniform model of the data (1 bit/dim for binary pixels, 8 for 8-bit ones). A run that ends
    worse than that (or at NaN) has diverged: it is warned about loudly, not left to exit
    quietly."""
    uniform = UNIFORM_BPD[data_kind]
    name = "val/bpd" if "val/bpd" in final else "val/elbo_bpd"
    bpd = final.get(name)
    if bpd is None:
        return {}
    worse = not math.isfinite(bpd) or bpd > uniform
    if worse:
        log.warning(
            "THIS RUN DIVERGED: it ends at %s = %s, worse than a uniform model of the data "
            "(%s bits/dim). Its checkpoints are kept but do not model the data; lower the "
            "learning rate (optim.optimizer.lr), clip gradients (trainer.gradient_clip_val) or "
            "bound the posterior scale (posterior.log_scale_bound).",
            name,
            bpd,
            uniform,
        )
    return {"uniform_bpd": uniform, "worse_than_uniform": worse}


#: optimiser settings and the values they may take (checked before training)
OPTIMIZER_RULES = {
    "lr": ("a number >= 0", lambda v: v >= 0),  # 0: no steps, as torch allows
    "weight_decay": ("a number >= 0", lambda v: v >= 0),
    "eps": ("a number >= 0", lambda v: v >= 0),
    "momentum": ("a number >= 0", lambda v: v >= 0),
}


def check_optimizer(node: DictConfig) -> None:
    """Fail before training, naming the key, where ``optim.optimizer`` holds a value torch
    would refuse only at the first step or with its own traceback (a negative or non-numeric
    lr, weight decay, eps or momentum; betas outside [0, 1))."""
    for key, (what, allowed) in OPTIMIZER_RULES.items():
        value = node.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not allowed(value):
            raise SettingError(f"optim.optimizer.{key}", f"must be {what}, got {value!r}")
    betas = node.get("betas")
    if betas is not None and not (
        len(betas) == 2
        and all(
            isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas
        )
    ):
        raise SettingError("optim.optimizer.betas", f"must be two numbers in [0, 1), got {betas}")


def optimizer_factory(cfg: DictConfig):
    """``params -> optimizer`` of ``cfg.optim``; a ``fused`` optimizer is made unfused under
    mixed precision with gradient clipping, which Lightning cannot combine with fused steps
    (they unscale the gradients themselves)."""
    clipped = cfg.trainer.get("gradient_clip_val") not in (None, 0)
    mixed = "mixed" in str(cfg.trainer.get("precision", ""))
    if clipped and mixed and cfg.optim.optimizer.get("fused"):
        log.info("optim.optimizer.fused=false: mixed precision with gradient clipping")
        return instantiate(cfg.optim.optimizer, fused=False)
    return instantiate(cfg.optim.optimizer)


def build_all(nodes: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a mapping (callbacks, loggers). Null entries are
    skipped, and so are settings without a ``_target_``: what an experiment sets for a callback
    that ``callbacks=none`` removed (``experiment=binarized_mnist callbacks=none``)."""
    if not nodes:
        return []
    built = []
    for name, node in nodes.items():
        if node is None:
            continue
        if OmegaConf.is_dict(node) and "_target_" not in node:
            log.warning(f"{name}: settings without a _target_ (none to build), skipped: {node}")
            continue
        built.append(instantiate(node))
    return built


def finish_loggers(loggers: list, succeeded: bool) -> None:
    """Close the loggers' runs, marking a failed fit as failed (wandb's exit code 1), so that
    a crashed run is not left open and the next job of a sweep starts a run of its own."""
    for logger in loggers:
        if getattr(logger, "_experiment", None) is not None and hasattr(
            logger.experiment, "finish"
        ):
            logger.experiment.finish(exit_code=0 if succeeded else 1)
        else:
            logger.finalize("success" if succeeded else "failed")


def ensure_writable_folder(folder: Path) -> None:
    """Prove that files can be written in ``folder`` (or, while it does not exist yet, in its
    nearest existing parent, where it will be created), or raise an ``OSError`` naming it:
    Lightning would otherwise train and keep no checkpoint. Nothing is left behind."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OSError(
            f"cannot write checkpoints into {folder} ({error}): point "
            "callbacks.model_checkpoint.dirpath (or hydra.run.dir) at a writable folder"
        ) from error


DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


def release_process_group() -> None:
    """After a fit, destroy the DDP process group and forget the variables Lightning's launcher
    set, so that the next job of a multirun (in the same process) launches its own processes
    instead of waiting for the previous job's, which have exited."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        for name in DIST_ENV:
            os.environ.pop(name, None)
