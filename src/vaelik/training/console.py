"""What a training run prints: a progress bar and a model summary, without Lightning's noise.

In a terminal the progress bar is Lightning's rich bar; when standard output is a file (a
``nohup`` log, a batch job) a live bar writes nothing until the end, so the run prints one line
per epoch instead, with the same metrics. Lightning, with ``rich`` installed, draws a rich
progress bar and model summary by default; these subclasses drop what tells a vaelik user
nothing: the logger's version number (``v_num``) in the
bar, and the FLOPs column and ``Total FLOPs: 0`` in the summary (Lightning counts FLOPs only for
an ``example_input_array``, which a VAE of several inputs does not give). Lightning's "💡 Tip"
advertisements, and its notice that a summary callback was given, are filtered out of its log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.callbacks.progress import ProgressBar as LightningProgressBar
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

#: summary columns shown: the module's name, its class and its parameter count
SUMMARY_COLUMNS = ("Name", "Type", "Params")


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar without ``v_num``."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class EpochLines(LightningProgressBar):
    """Progress for a log file: after every training epoch, one line with the epoch, the time
    since the start and the metrics the bar would show (validation ones included)."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.start = time.monotonic()

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start = time.monotonic()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        shown = ", ".join(f"{name} {format_metric(value)}" for name, value in metrics.items())
        elapsed = time.monotonic() - self.start
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({elapsed:.0f} s): {shown}",
            flush=True,
        )


def format_metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class ModelSummary(LightningModelSummary):
    """The modules (the VAE and its parts) with their parameter counts, and the totals; no
    FLOPs."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        columns = {name: values for name, values in summary_data if name in SUMMARY_COLUMNS}
        table = Table(*columns)
        for row in zip(*columns.values(), strict=True):
            table.add_row(*row)
        console = Console()
        console.print(table)
        console.print(
            f"{get_human_readable_count(total_parameters)} parameters "
            f"({get_human_readable_count(trainable_parameters)} trainable), {model_size:.1f} MB"
        )


def console_callbacks(trainer_cfg: DictConfig) -> list[Callback]:
    """The progress bar (rich in a terminal, :class:`EpochLines` otherwise) and model summary
    the trainer config asks for (none when it turns them off: Lightning refuses a progress-bar
    callback with ``enable_progress_bar=false``)."""
    callbacks: list[Callback] = []
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(ProgressBar() if Console().is_terminal else EpochLines())
    if trainer_cfg.get("enable_model_summary", True):
        callbacks.append(ModelSummary(max_depth=2))
    return callbacks


#: the starts of Lightning's log messages that a vaelik run does not show
LIGHTNING_NOISE = ("💡 Tip", "Trainer already configured with model summary")


class WithoutTips(logging.Filter):
    """Drops Lightning's adverts for its cloud services and its notice that our own model
    summary replaced its default one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_NOISE)


def quiet_lightning_tips() -> None:
    """Filter Lightning's tips out of its rank-zero log (idempotent)."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, WithoutTips) for f in log.filters):
        log.addFilter(WithoutTips())
