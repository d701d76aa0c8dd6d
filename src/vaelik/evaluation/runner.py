"""Evaluate a trained model: rebuild it from its checkpoint, run an estimator over a split (shared
out among processes when launched by torchrun), write per-example results and a summary."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset

from vaelik.checkpoint import VAECheckpoint, load_weights, read_checkpoint
from vaelik.data import ImageDataModule
from vaelik.data.datamodule import example_indices
from vaelik.evaluation.distributed import gather_results, process_group, shard, world
from vaelik.evaluation.formatting import estimate_text, report_written
from vaelik.evaluation.results import PerExampleResults
from vaelik.evaluation.trusted_config import check_trusted_config
from vaelik.inference.estimators import Estimate
from vaelik.models.factory import build_model
from vaelik.models.vae import VAE
from vaelik.progress import example_progress


def estimate_examples(
    model: torch.nn.Module,
    dataset: Dataset,
    estimator,
    proposal,
    indices: Sequence[int],
    batch_size: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "log p(x)",
) -> PerExampleResults:
    """Apply ``estimator`` to the examples ``indices`` of ``dataset`` (items are ``(x, index)``),
    with a progress bar over examples, labelled ``description``, when ``progress``."""
    was_training = model.training
    model.eval()
    parts: list[tuple[torch.Tensor, Estimate]] = []
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size)
    try:
        with example_progress(len(indices), description, progress) as advance:
            for x, index in loader:
                index = torch.as_tensor(index)
                parts.append((index, estimator(model, x.to(device), index, proposal)))
                advance(len(index))
    finally:
        model.train(was_training)
    return PerExampleResults.concatenate(parts)


def share_note(size: int) -> str:
    """What a progress bar on the first of ``size`` processes counts: its own share."""
    return f" (this process's share of {size})" if size > 1 else ""


def pick_device(name: str) -> torch.device:
    """``auto`` -> this process's CUDA device when available, else CPU; any other name as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def write_results(output_dir: Path, results: PerExampleResults, summary: dict[str, Any]) -> None:
    """Write ``per_example.csv`` (index, log_px, ess, log_weight_var, khat, and a grid rule's
    grid_error), ``summary.json``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = results.rows()
    with open(output_dir / "per_example.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["index"])
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def model_from_checkpoint(
    path: str | Path, data_dir: str | None = None
) -> tuple[VAE, ImageDataModule, VAECheckpoint]:
    """The model of the checkpoint at ``path`` with its weights, its datamodule (data folder
    replaced by ``data_dir`` when given) and the checkpoint's record."""
    checkpoint = read_checkpoint(path)
    check_trusted_config(checkpoint.config, path)  # before anything is instantiated
    run_cfg = OmegaConf.create(checkpoint.config)
    if data_dir is not None and "data_dir" in run_cfg.data.source:
        run_cfg.data.source.data_dir = data_dir
    datamodule = instantiate(run_cfg.data)
    model = build_model(run_cfg, datamodule.kind)
    load_weights(model, checkpoint)
    return model, datamodule, checkpoint


def load_model(cfg: DictConfig) -> tuple[VAE, ImageDataModule]:
    """The VAE of ``cfg.ckpt_path`` and its datamodule (data folder from ``cfg.data_dir``)."""
    model, datamodule, _ = model_from_checkpoint(cfg.ckpt_path, cfg.get("data_dir"))
    return model, datamodule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the model of ``cfg.ckpt_path``, estimate log p(x) on ``cfg.split``, write results."""
    model, datamodule = load_model(cfg)
    device = pick_device(cfg.device)
    model.to(device)

    estimator = instantiate(cfg.estimator)
    proposal = instantiate(cfg.proposal)
    estimator.check(model, proposal)  # an impossible combination fails before any work
    dataset = datamodule.dataset(cfg.split)
    indices = example_indices(dataset, cfg.num_examples)
    count = len(indices)
    with process_group(device, cfg.get("dist_timeout_s", 300.0)):
        start = time.perf_counter()
        rank, size = world()
        local = estimate_examples(
            model,
            dataset,
            estimator,
            proposal,
            shard(indices),
            cfg.batch_size,
            device,
            progress=rank == 0,
            description=f"{estimator.name}, K={estimator.num_samples}" + share_note(size),
        )
        results = gather_results(local)
        seconds = time.perf_counter() - start

    summary: dict[str, Any] = {
        **results.summary(datamodule.num_dims),
        "num_samples": estimator.num_samples,
        "estimator": estimator.name,
        "proposal": estimator.proposal_for(model, proposal).name,
        "split": cfg.split,
        "seconds": seconds,
        "samples_per_second": count * estimator.num_samples / seconds,
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "device": str(device),
        "processes": size,
    }
    if rank == 0:
        output_dir = Path(cfg.paths.output_dir)
        write_results(output_dir, results, summary)
        print(f"{cfg.split}: {estimate_text(summary)}, {seconds:.1f} s")
        report_written(output_dir)
    return summary
