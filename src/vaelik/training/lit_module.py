"""A thin LightningModule around :class:`vaelik.models.vae.VAE`: the objective and the optimiser."""

from __future__ import annotations

import functools
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


class EpochSums:
    """Batch-size-weighted sums of scalar metrics over an epoch, kept on the metrics' device
    (no host sync per step): mean_m = sum_steps b_s m_s / sum_steps b_s."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None  # [M] float64
        self.count = 0

    def add(self, metrics: dict[str, torch.Tensor], batch_size: int) -> None:
        # float64 sums, except on Apple's MPS, which has no float64
        on_mps = next(iter(metrics.values())).device.type == "mps"
        dtype = torch.float32 if on_mps else torch.float64
        values = torch.stack([value.detach().to(dtype) for value in metrics.values()])
        if self.sums is None:
            self.names, self.sums = list(metrics), torch.zeros_like(values)
        self.sums += values * batch_size
        self.count += batch_size

    def means(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """Means over everything added (``reduce_sum`` adds a tensor over processes)."""
        if self.sums is None:
            return {}
        totals = reduce_sum(torch.cat([self.sums, self.sums.new_tensor([self.count])]))
        return dict(zip(self.names, (totals[:-1] / totals[-1]).float(), strict=True))


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
        self.epoch_sums = {split: EpochSums() for split in ("train", "val", "test")}

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
        metrics = {
            f"{split}/elbo": elbo,
            f"{split}/log_px_z": terms.log_px_z.mean(),
            f"{split}/kl": terms.kl.mean(),
            f"{split}/elbo_bpd": bits_per_dim(elbo, self.num_dims),
            f"{split}/bound": terms.bound.mean(),
            f"{split}/loss": loss,
        }
        self.epoch_sums[split].add(metrics, x.shape[0])
        if split == "train":
            self.log_training_step(metrics, terms.kl_weight)
        return loss

    def log_training_step(self, metrics: dict[str, torch.Tensor], kl_weight: float) -> None:
        """On the steps the loggers write (every ``trainer.log_every_n_steps``): the metrics
        as ``train/<metric>_step`` (the loss also to the progress bar) and ``train/kl_weight``.
        Epoch means come from running sums instead of Lightning's own accumulation: a
        ``self.log`` call costs Lightning a walk over its result object, and seven a step cost
        about a tenth of an MLP epoch on a CPU."""
        every = self.trainer.log_every_n_steps  # 0: no step logging, as in Lightning
        if every and (self.global_step + 1) % every == 0:
            steps = {f"{name}_step": value for name, value in metrics.items()}
            self.log("train/loss_step", steps.pop("train/loss_step"), prog_bar=True)
            self.log_dict({**steps, "train/kl_weight": kl_weight})

    def log_epoch_means(self, split: str, suffix: str = "") -> None:
        """``<split>/<metric><suffix>``: each metric's mean over the epoch's examples, the same
        on every process (sums and counts are added over processes first)."""
        reduce_sum = functools.partial(self.trainer.strategy.reduce, reduce_op="sum")
        logged = dict(on_step=False, on_epoch=True, sync_dist=True)  # equal on every process
        for name, value in self.epoch_sums[split].means(reduce_sum).items():
            self.log(f"{name}{suffix}", value, prog_bar=name == f"{split}/loss", **logged)
            if suffix:  # and unsuffixed for callbacks and metrics.json, as Lightning does
                self.log(name, value, logger=False, **logged)
        self.epoch_sums[split] = EpochSums()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # the epoch's means at its last batch, before validation and every callback's
        # on_train_epoch_end (the per-epoch console line among them) reads them
        if batch_idx + 1 == self.trainer.num_training_batches:
            self.log_epoch_means("train", "_epoch")

    def on_train_epoch_end(self) -> None:
        if self.epoch_sums["train"].count:  # an epoch of unknown length, or one cut short
            self.log_epoch_means("train", "_epoch")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_means("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch_means("test")

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
