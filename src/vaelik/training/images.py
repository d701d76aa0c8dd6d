"""What a run shows a person: image grids, figures and histograms, written as files and sent to
the loggers that display them (wandb, TensorBoard)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from vaelik.data.binarize import intensities


def image_grid(images: torch.Tensor, kind: str, nrow: int = 8) -> torch.Tensor:
    """A ``[3, H', W']`` grid in [0, 1] from images in data units (0/1 or 0..255)."""
    unit = intensities(images.clamp(0, 255 if kind == "8bit" else 1), kind)  # type: ignore[arg-type]
    return make_grid(unit.cpu(), nrow=nrow, padding=2, pad_value=0.5)


def log_grid(trainer: pl.Trainer, key: str, grid: torch.Tensor, path: Path) -> None:
    """Write ``grid`` to ``path`` (on rank 0) and log it to each logger that accepts images."""
    if not trainer.is_global_zero:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key=key, images=[grid], step=trainer.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoardLogger
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)


def log_figure_file(trainer: pl.Trainer, key: str, path: Path) -> None:
    """Send a PNG already written at ``path`` to the loggers that take images (rank 0 only)."""
    if not trainer.is_global_zero:
        return
    from PIL import Image

    image = Image.open(path).convert("RGB")
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[image], step=trainer.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):
            pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
            logger.experiment.add_image(key, pixels, global_step=trainer.global_step)


def log_histograms(trainer: pl.Trainer, values: dict[str, torch.Tensor]) -> None:
    """Histograms of per-example values (e.g. log p(x), ESS) for wandb and TensorBoard."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            histograms = {
                key: wandb.Histogram(v.double().cpu().numpy()) for key, v in values.items()
            }
            logger.log_metrics(histograms, step=trainer.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_histogram"):
            for key, v in values.items():
                logger.experiment.add_histogram(
                    key, v.double().cpu(), global_step=trainer.global_step
                )
