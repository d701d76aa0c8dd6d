"""``vaelik-eval``: estimate log p(x) on a data split from a checkpoint alone."""

from __future__ import annotations

from vaelik.cli import run_hydra_app
from vaelik.evaluation.runner import evaluate


def main() -> None:
    """Console-script entry point (``vaelik-eval ckpt_path=PATH``)."""
    run_hydra_app(evaluate, "eval")


if __name__ == "__main__":
    main()
