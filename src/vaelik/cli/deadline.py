"""``vaelik-deadline``: Monte Carlo vs importance sampling on a project-deadline graph (Owen)."""

from __future__ import annotations

from pathlib import Path

from vaelik.cli import run_hydra_app
from vaelik.config import config_dir
from vaelik.examples.deadline import deadline


def main() -> None:
    """Console-script entry point (``vaelik-deadline``)."""
    run_hydra_app(deadline, "deadline", str(Path(config_dir()) / "deadline"))


if __name__ == "__main__":
    main()
