"""``vaelik-results``: a results table for several checkpoints, measured the same way."""

from __future__ import annotations

from vaelik.cli import run_hydra_app
from vaelik.evaluation.table import results_table


def main() -> None:
    """Console-script entry point (``vaelik-results checkpoints={name:PATH,...}``)."""
    run_hydra_app(results_table, "results")


if __name__ == "__main__":
    main()
