"""Lightning's ``ModelCheckpoint`` with a ``last.ckpt`` that always holds the latest epoch.

Lightning 2.5-2.6 writes ``last.ckpt`` only in validation epochs that also save a top-k
checkpoint, and at the end of fit only if no ``last.ckpt`` was ever written: a run whose last
epochs do not improve the monitored metric would end with ``last.ckpt`` several epochs old, and
resuming it would train those epochs again. This subclass also writes ``last.ckpt`` at the end of
every training epoch (after that epoch's validation and after Lightning's own saving, which it
must not pre-empt: Lightning skips a step it has already saved) and at the end of fit (a time
limit, early stopping, the last epoch), whenever the step has moved since it was last written.

The class keeps the name ``ModelCheckpoint`` so that its state in a checkpoint (best score and
path, stored under a key built from the class name) is found again when runs written with
Lightning's own class are resumed.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` (with ``save_last``) is the latest epoch, and
    the end of fit."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_in_last: int | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.save_latest(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.save_latest(trainer)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self.step_in_last = trainer.global_step

    def save_latest(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless it already holds this step (or this is a sanity check)."""
        if not self.save_last or trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        if self.step_in_last == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
