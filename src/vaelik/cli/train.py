"""``vaelik-train``: train a model as the Hydra config says, with log p(x) tracked every epoch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from vaelik.cli import run_hydra_app
from vaelik.training.fit import train

DDP_JOB_ENV = "VAELIK_DDP_JOB"


def remember_job_for_ddp_children() -> None:
    """In a multirun job, record this job's overrides and run directory in the environment.

    Lightning's DDP launcher starts the other processes by re-running the command line, which
    for ``-m`` would re-run the whole sweep in every child; :func:`as_single_job_in_ddp_child`
    uses this record to make a child run only its parent's job.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        job = {"overrides": list(hydra_cfg.overrides.task), "dir": hydra_cfg.runtime.output_dir}
        os.environ[DDP_JOB_ENV] = json.dumps(job)


def as_single_job_in_ddp_child(argv: list[str]) -> list[str]:
    """The command line a DDP child (LOCAL_RANK > 0) should run: its parent's job alone."""
    job = os.environ.get(DDP_JOB_ENV)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0 or job is None:
        return argv
    record = json.loads(job)
    launcher_args = [
        a for a in argv[1:] if a.startswith("hydra.") and not a.startswith("hydra.run.dir=")
    ]
    return [argv[0], *record["overrides"], *launcher_args, f"hydra.run.dir={record['dir']}"]


def name_run_from_hydra(cfg: DictConfig) -> None:
    """Fill ``run_name`` (the job's overrides, or ``task_name``) and ``run_group`` (the sweep's
    directory name in a multirun) when the config leaves them null, so that loggers such as
    wandb name runs after what was varied and group a sweep's runs together."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    with open_dict(cfg):
        if cfg.get("run_name") is None:
            cfg.run_name = hydra_cfg.job.override_dirname or cfg.task_name
        if cfg.get("run_group") is None and hydra_cfg.mode == RunMode.MULTIRUN:
            cfg.run_group = Path(hydra_cfg.sweep.dir).name


def _run(cfg: DictConfig) -> float | None:
    remember_job_for_ddp_children()
    name_run_from_hydra(cfg)
    return train(cfg)


def main() -> float | None:
    """Console-script entry point (``vaelik-train``): compose the config, then train."""
    sys.argv = as_single_job_in_ddp_child(sys.argv)
    return run_hydra_app(_run, "train")


if __name__ == "__main__":
    main()
