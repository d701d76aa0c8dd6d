"""A thin LightningModule around :class:`vaelik.model.VAE`: the ELBO objective and the optimiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from vaelik.metrics import bits_per_dim
from vaelik.model import VAE

CONFIG_KEY = "vaelik_config"


class VAELitModule(pl.LightningModule):
    """Maximises the mean per-example ELBO; logs ``{split}/elbo``, ``/log_px_z``, ``/kl``.

    Args:
        model: the VAE.
        optimizer: ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_``).
        num_dims: D = C * H * W, for ``{split}/elbo_bpd``.
        analytic_kl: use the closed-form KL(q||p) in the objective.
        config: the resolved run config, written into every checkpoint so that evaluation can
            rebuild the model from the checkpoint alone.
    """

    def __init__(
        self,
        model: VAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_dims: int,
        analytic_kl: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.num_dims = num_dims
        self.analytic_kl = analytic_kl
        self.config = config

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, _ = batch
        terms = self.model.elbo(x, analytic_kl=self.analytic_kl)
        elbo = terms.elbo.mean()
        if not torch.isfinite(elbo):
            raise FloatingPointError(
                f"non-finite {split} ELBO ({elbo.item()}): lower optim.optimizer.lr, or bound the "
                "posterior scale with posterior.log_scale_bound=5"
            )
        on_step = split == "train"
        metrics = {
            f"{split}/elbo": elbo,
            f"{split}/log_px_z": terms.log_px_z.mean(),
            f"{split}/kl": terms.kl.mean(),
            f"{split}/elbo_bpd": bits_per_dim(elbo, self.num_dims),
        }
        self.log_dict(
            metrics,
            on_step=on_step,
            on_epoch=True,
            prog_bar=False,
            sync_dist=not on_step,
            batch_size=x.shape[0],
        )
        self.log(
            f"{split}/loss",
            -elbo,
            prog_bar=True,
            on_step=on_step,
            on_epoch=True,
            sync_dist=not on_step,
            batch_size=x.shape[0],
        )
        return -elbo

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.config is not None:
            checkpoint[CONFIG_KEY] = self.config
