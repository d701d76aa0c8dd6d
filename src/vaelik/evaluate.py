"""``vaelik-eval``: estimate log p(x) on a data split from a checkpoint alone."""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vaelik.checkpoint import load_weights, read_checkpoint
from vaelik.config import config_dir
from vaelik.data import ImageDataModule
from vaelik.data.datamodule import example_count
from vaelik.evaluation import PerExampleResults, estimate_examples, gather_results, shard, world
from vaelik.factory import build_model
from vaelik.model import VAE

warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def pick_device(name: str) -> torch.device:
    """``auto`` -> this process's CUDA device when available, else CPU; any other name as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo
    on CPUs; each process then evaluates a disjoint share of the examples. The group is
    destroyed on the way out (left to interpreter exit, gloo can abort a process)."""
    joined = int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if joined:
            dist.barrier()
            dist.destroy_process_group()


def write_results(output_dir: Path, results: PerExampleResults, summary: dict[str, Any]) -> None:
    """Write ``per_example.csv`` (index, log_px, ess, log_weight_var, khat), ``summary.json``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = results.rows()
    with open(output_dir / "per_example.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["index"])
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def load_model(cfg: DictConfig) -> tuple[VAE, ImageDataModule]:
    """The VAE of ``cfg.ckpt_path`` with its weights, and its datamodule (data folder replaced
    by ``cfg.data_dir`` when set)."""
    checkpoint = read_checkpoint(cfg.ckpt_path)
    run_cfg = OmegaConf.create(checkpoint.config)
    if cfg.get("data_dir") is not None and "data_dir" in run_cfg.data.source:
        run_cfg.data.source.data_dir = cfg.data_dir
    datamodule = instantiate(run_cfg.data)
    model = build_model(run_cfg, datamodule.kind)
    load_weights(model, checkpoint)
    return model, datamodule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the model of ``cfg.ckpt_path``, estimate log p(x) on ``cfg.split``, write results."""
    model, datamodule = load_model(cfg)
    device = pick_device(cfg.device)
    model.to(device)

    estimator = instantiate(cfg.estimator)
    proposal = instantiate(cfg.proposal)
    dataset = datamodule.dataset(cfg.split)
    count = example_count(dataset, cfg.num_examples)
    with process_group(device):
        start = time.perf_counter()
        rank, size = world()
        local = estimate_examples(
            model,
            dataset,
            estimator,
            proposal,
            shard(range(count)),
            cfg.batch_size,
            device,
            progress=rank == 0,
        )
        results = gather_results(local)
        seconds = time.perf_counter() - start

    summary: dict[str, Any] = {
        **results.summary(datamodule.num_dims),
        "num_samples": estimator.num_samples,
        "estimator": estimator.name,
        "proposal": estimator.proposal_for(proposal).name,
        "split": cfg.split,
        "seconds": seconds,
        "samples_per_second": count * estimator.num_samples / seconds,
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "device": str(device),
        "processes": size,
    }
    if rank == 0:
        write_results(Path(cfg.paths.output_dir), results, summary)
        print(json.dumps(summary, indent=2))
    return summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console-script entry point (``vaelik-eval ckpt_path=PATH``)."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
