"""Entry points (console scripts). Nothing in the library imports this package."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from vaelik.config import config_dir


def run_hydra_app(
    task: Callable[[DictConfig], Any], config_name: str, config_path: str | None = None
) -> Any:
    """Compose ``config_name`` from the config tree (or ``config_path``) with the command line's
    overrides and run ``task`` on it as a Hydra application (multirun, sweeps, run folders)."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    path = config_path or config_dir()
    return hydra.main(version_base="1.3", config_path=path, config_name=config_name)(task)()
