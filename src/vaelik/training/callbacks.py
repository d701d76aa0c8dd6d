"""Lightning callbacks: importance-sampled log p(x) every validation epoch, and image grids."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch

from vaelik.errors import ConfigError, SettingError
from vaelik.evaluation.convergence import convergence
from vaelik.evaluation.estimate import estimate
from vaelik.inference.plan import Plan, resolve
from vaelik.subsets import example_indices
from vaelik.training.images import image_grid, log_figure_file, log_grid, log_histograms

log = logging.getLogger(__name__)


def _last_epoch(trainer: pl.Trainer) -> bool:
    return trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs


def _due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """True on validation epochs ``every_n_epochs`` apart, and on the last training epoch."""
    if trainer.sanity_checking:
        return False
    return (trainer.current_epoch + 1) % every_n_epochs == 0 or _last_epoch(trainer)


class LogLikelihoodCallback(pl.Callback):
    """Estimate log p(x) of ``num_examples`` validation examples, spread evenly over the split,
    at validation epoch end.

    Logs ``val/log_px`` (mean nats per example), ``val/log_px_stderr``, ``val/bpd``
    (-log p(x) / (D ln 2) of the mean), ``val/ess`` (mean normalised ESS) and ``val/khat``
    (mean PSIS k-hat, when K >= 25). The draws come from per-example streams keyed by the
    estimator's seed and the example's index, so every epoch is scored on the same noise and
    the training random stream is left untouched. Under DDP each process scores a disjoint
    share of the examples and the per-example results are all-gathered before summarising, so
    the figures equal a one-process run's.

    Args:
        estimator / proposal: as in :mod:`vaelik.inference.estimators` and
            :mod:`vaelik.inference.proposals`; a combination the model cannot run fails when
            the fit starts, before the first epoch.
        num_samples: K for this per-epoch estimate, replacing the estimator's (None keeps it;
            a grid rule keeps its own points^L).
        convergence_ks: at the last epoch, also plot mean log p(x) against these K values and
            ``num_samples`` (``convergence.png`` in ``output_dir``, and sent to the loggers).
        num_examples: validation examples used, spread evenly over the split (null: all).
        every_n_epochs: run on every n-th validation epoch (and the last).
        batch_size: examples per estimator call.
    """

    def __init__(
        self,
        estimator,
        proposal,
        num_samples: int | None = 128,
        num_examples: int | None = 500,
        every_n_epochs: int = 1,
        batch_size: int = 100,
        convergence_ks: list[int] | None = None,
        output_dir: str | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ConfigError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if num_examples is not None and num_examples < 1:
            raise ConfigError(f"num_examples must be >= 1 or null, got {num_examples}")
        if num_samples is not None and estimator.takes("num_samples"):  # not quadrature's K
            try:
                estimator = estimator.replace(num_samples=num_samples)
            except SettingError as error:
                raise error.under("callbacks.log_likelihood") from None
        self.estimator = estimator
        self.proposal = proposal
        self.num_examples = num_examples
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.convergence_ks = sorted(set(convergence_ks or []))
        self.output_dir = Path(output_dir) if output_dir else None
        #: resolved for the model at setup
        self.plan: Plan | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # an impossible choice fails now; the per-epoch estimate takes AIS's automatic start
        # (the run's proposal is the config's, usually its default), and says what it chose
        self.plan = resolve(pl_module.model, self.estimator, self.proposal, accept_rules=True)
        if trainer.is_global_zero:
            log.info("per-epoch log p(x): %s", self.plan.describe())

    def plotted_ks(self) -> list[int]:
        """The K values of ``convergence.png``: ``convergence_ks`` and this callback's own K (so
        the plot ends at, or passes through, the logged ``val/log_px``), none dropped."""
        return sorted(set(self.convergence_ks) | {self.estimator.num_samples})

    def _log_convergence(self, trainer, pl_module, dataset, indices: list[int]) -> None:
        """At the last epoch: mean log p(x) against K (nested draws, one pass), as
        ``convergence.png`` in the run directory and an image for the loggers."""
        table = convergence(
            pl_module.model,
            dataset,
            ks=self.plotted_ks(),
            estimators=[self.estimator],
            proposals=[self.proposal],
            batch_size=self.batch_size,
            examples=indices,
            device=pl_module.device,
        )
        if trainer.is_global_zero and self.output_dir is not None:
            path = self.output_dir / "convergence.png"
            table.plot(path, f"validation, {len(indices)} examples, epoch {trainer.current_epoch}")
            log_figure_file(trainer, "val/convergence", path)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not _due(trainer, self.every_n_epochs):
            return
        dataset = trainer.datamodule.dataset("val")
        indices = example_indices(dataset, self.num_examples)
        # every example once, whatever the number of processes (each estimates its share);
        # Lightning validates under inference mode, where AIS and a refined proposal, which
        # need gradients in the latents, cannot run
        with torch.inference_mode(False):
            results = estimate(
                pl_module.model,
                dataset,
                plan=self.plan,
                batch_size=self.batch_size,
                examples=indices,
                device=pl_module.device,
            ).results
            log_histograms(
                trainer, {"val/log_px_hist": results.log_px, "val/ess_hist": results.ess}
            )
            if _last_epoch(trainer) and self.convergence_ks:
                self._log_convergence(trainer, pl_module, dataset, indices)
        summary = results.summary(trainer.datamodule.num_dims)
        metrics = {
            "val/log_px": summary["log_px_mean"],
            "val/log_px_stderr": summary["log_px_stderr"],
            "val/bpd": summary["bpd"],
            "val/ess": summary["ess_mean"],
            "val/khat": summary["khat_mean"],
            # share of the examples whose estimate its own check flags (k-hat > 0.7, ...)
            "val/flagged": summary["flagged_share"],
        }
        for key, value in metrics.items():
            if value is None:
                continue
            pl_module.log(key, float(value), prog_bar=key in ("val/log_px", "val/bpd"))


class ImageGridCallback(pl.Callback):
    """Save ``samples.png`` (means of p(x|z), z ~ p(z)) and ``reconstructions.png`` (rows of inputs
    over their reconstructions) under ``output_dir`` at validation epoch end, and log both."""

    def __init__(self, output_dir: str, num_samples: int = 64, every_n_epochs: int = 1) -> None:
        self.output_dir = Path(output_dir)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not _due(trainer, self.every_n_epochs):
            return
        datamodule = trainer.datamodule
        val = datamodule.dataset("val")
        model = pl_module.model
        was_training = model.training
        model.eval()
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            samples = model.sample(self.num_samples)
            nrow = min(8, len(val))
            n = nrow * max(1, min(self.num_samples // 2, len(val)) // nrow)
            x = torch.stack([val[i][0] for i in range(n)]).to(pl_module.device)
            recon = model.reconstruct(x)
        model.train(was_training)
        # rows of `nrow` inputs, each followed by a row of their reconstructions
        pairs = torch.stack([x.unflatten(0, (-1, nrow)), recon.unflatten(0, (-1, nrow))], dim=1)
        kind = datamodule.kind
        log_grid(trainer, "samples", image_grid(samples, kind), self.output_dir / "samples.png")
        log_grid(
            trainer,
            "reconstructions",
            image_grid(pairs.flatten(0, 2), kind, nrow=nrow),
            self.output_dir / "reconstructions.png",
        )
