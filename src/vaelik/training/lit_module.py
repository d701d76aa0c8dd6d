"""A thin LightningModule around :class:`vaelik.models.vae.VAE`: the objective and the optimiser."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from vaelik.checkpoint import CONFIG_KEY, MACHINE_KEY, TRAIN_SECONDS_KEY, describe_machine
from vaelik.inference.objectives import Elbo, Objective
from vaelik.metrics import bits_per_dim
from vaelik.models.vae import VAE
from vaelik.training.resume import RANDOM_STATES_KEY, random_states, restore_random_states


class VAELitModule(pl.LightningModule):
    """Minimises ``objective``'s loss; logs ``{split}/elbo`` (the plain ELBO, whatever the
    objective), ``/log_px_z``, ``/kl``, ``/elbo_bpd``, ``/loss`` and ``/bound`` (the
    objective's own per-example value), and ``train/kl_weight``.

    Args:
        model: the latent-variable model.
        optimizer: ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_``).
        num_dims: D = C * H * W, for ``{split}/elbo_bpd``.
        objective: the training bound (``conf/objective/``); the ELBO by default.
        config: the resolved run config, written into every checkpoint so that evaluation can
            rebuild the model from the checkpoint alone.
    """

    def __init__(
        self,
        model: VAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_dims: int,
        objective: Objective | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.num_dims = num_dims
        self.objective = objective if objective is not None else Elbo()
        self.config = config
        self.seconds_before_fit = 0.0  # training time of the fits this one resumes
        self.fit_started: float | None = None
        self.random_states_to_restore: dict[str, Any] | None = None  # from a resumed checkpoint

    def epoch_progress(self, batch_idx: int) -> float:
        """Training epochs done so far, fractional (for the KL warm-up)."""
        batches = getattr(self.trainer, "num_training_batches", None) if self._trainer else None
        fraction = batch_idx / batches if batches and batches != float("inf") else 0.0
        return self.current_epoch + fraction

    def _step(
        self, batch: tuple[torch.Tensor, torch.Tensor], split: str, batch_idx: int
    ) -> torch.Tensor:
        x, _ = batch
        progress = self.epoch_progress(batch_idx) if split == "train" else float(self.current_epoch)
        terms = self.objective(self.model, x, progress)
        loss = terms.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {split} loss ({loss.item()}): lower optim.optimizer.lr, or bound the "
                "posterior scale with posterior.log_scale_bound=5"
            )
        elbo = terms.elbo.mean()
        on_step = split == "train"
        metrics = {
            f"{split}/elbo": elbo,
            f"{split}/log_px_z": terms.log_px_z.mean(),
            f"{split}/kl": terms.kl.mean(),
            f"{split}/elbo_bpd": bits_per_dim(elbo, self.num_dims),
            f"{split}/bound": terms.bound.mean(),
        }
        logged = dict(on_step=on_step, on_epoch=True, sync_dist=not on_step, batch_size=x.shape[0])
        self.log_dict(metrics, prog_bar=False, **logged)
        self.log(f"{split}/loss", loss, prog_bar=True, **logged)
        if split == "train":
            self.log("train/kl_weight", terms.kl_weight, on_step=True, on_epoch=False)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test", batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())

    def on_fit_start(self) -> None:
        self.fit_started = time.perf_counter()

    def on_validation_end(self) -> None:
        # a resumed fit's sanity-check validation drew from the streams the uninterrupted run
        # did not touch there: set them back before the first training batch is drawn
        if self.trainer.sanity_checking and self.random_states_to_restore is not None:
            restore_random_states(self.random_states_to_restore)

    def on_train_start(self) -> None:
        self.random_states_to_restore = None

    def training_seconds(self) -> float:
        """Wall-clock seconds of training so far, over every resumed fit."""
        running = time.perf_counter() - self.fit_started if self.fit_started is not None else 0.0
        return self.seconds_before_fit + running

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.config is not None:
            checkpoint[CONFIG_KEY] = self.config
        checkpoint[TRAIN_SECONDS_KEY] = self.training_seconds()
        checkpoint[MACHINE_KEY] = describe_machine()
        checkpoint[RANDOM_STATES_KEY] = random_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        seconds = checkpoint.get(TRAIN_SECONDS_KEY)
        if seconds is None:  # written before vaelik recorded it: Lightning's Timer may have
            seconds = (
                checkpoint.get("callbacks", {})
                .get("Timer", {})
                .get("time_elapsed", {})
                .get("train", 0.0)
            )
        self.seconds_before_fit = float(seconds)
        self.random_states_to_restore = checkpoint.get(RANDOM_STATES_KEY)
        if self.random_states_to_restore is not None:  # and again after a sanity check
            restore_random_states(self.random_states_to_restore)
